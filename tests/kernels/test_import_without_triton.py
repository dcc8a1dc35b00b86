"""A CPU-only install without Triton can import the ops and run the references."""

import subprocess
import sys

CODE = """
import sys
sys.modules["triton"] = None  # any `import triton` now fails
import torch
from sala_report.kernels import SparseParams, compress_keys, lightning_prefill
q = torch.randn(1, 70, 2, 8)
o, s = lightning_prefill(q, q, q, torch.tensor([-0.5, -0.1]), scale=0.3)
assert o.shape == q.shape and compress_keys(q, kernel_size=32, stride=16).shape == (1, 3, 2, 8)
print("ok")
"""


def test_reference_path_needs_no_triton():
    r = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr
