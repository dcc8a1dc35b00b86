# Sourced at the start of a command on the device tool's GPU machine (no internet there): installs the wheels the
# image lacks and puts the package on the path under its import name. Fetch the wheels here first, into the ignored
# folder .whl/ (carry it):
#   for p in gguf==0.19.0 platformdirs==4.14.9; do python3 -m pip download --no-deps --only-binary=:all: \
#     --python-version 3.12 --implementation cp --platform manylinux_2_17_x86_64 -d .whl $p; done
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_31_x86_64 -d .whl llguidance==1.9.1
# Then run the gpu-marked files by name (collecting the whole tree there fails on the app's other dependencies):
#   source .ci/device-setup.sh; python3 -m pytest -m gpu -p no:cacheprovider tests/kernels/test_kernels_gpu.py ...
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || return 1
mkdir -p /tmp/pkg/sala_report
for d in app model kernels retrieval assets; do ln -sfn "$PWD/$d" /tmp/pkg/sala_report/$d; done
export PYTHONPATH=/tmp/site:/tmp/pkg PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv
