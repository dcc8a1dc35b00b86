"""The one settings tree: defaults, then the TOML file in the XDG config dir, then environment, then flags.

Only this module reads configuration files and environment variables; every other part receives
the slice it needs as plain values.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

from platformdirs import PlatformDirs

from sala_report.app.errors import ConfigError
from sala_report.app.weight_format import QUANTIZE_HINT, quantize_problem

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

APP_NAME = "sala-report"
ENV_PREFIX = "SALA_REPORT_"


@dataclass
class PathSettings:
    """Where state lives. `data_dir` holds the SQLite store and reports; `SALA_REPORT_HOME` moves it."""

    data_dir: Path = field(default_factory=lambda: PlatformDirs(APP_NAME).user_data_path)
    log_dir: Path = field(default_factory=lambda: PlatformDirs(APP_NAME).user_log_path)

    @property
    def store_path(self) -> Path:
        return self.data_dir / "sala.db"

    @property
    def reports_dir(self) -> Path:
        return self.data_dir / "reports"


@dataclass
class ModelSettings:
    """Which model writes, and how. `backend` is `local` (in-process) or `openai` (vLLM / SGLang server)."""

    source: str = "smollm2-135m"
    backend: Literal["local", "openai"] = "local"
    device: str = "auto"
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    # Weight format on a GPU: "auto" is the most faithful that fits the card at the model's context (model/quant.py);
    # "gguf" keeps a .gguf source's own quantized blocks
    quantize: Literal["auto", "bf16", "gguf", "int8", "int4", "fp8"] = "auto"
    base_url: str = "http://127.0.0.1:8000/v1"
    served_model: str = ""
    api_key: str = ""
    request_timeout_s: float = 600.0
    # How a served model is constrained: "auto" (probe the server once: a grammar where it takes one, else a JSON
    # schema, else none), "grammar" (GBNF), "lark" (llguidance backends), "json_schema", "none"
    structured_output: Literal["auto", "grammar", "lark", "json_schema", "none"] = "auto"
    max_retries: int = 3  # retries of a failed request to a served model, with exponential backoff

    def __post_init__(self) -> None:
        # a source given after loading (`run --model`) is checked as it replaces the settings' own
        check_quantize(self)


class _Owned:
    """The default of a setting that a retrieval config type keeps (`OWNED` below)."""

    def __repr__(self) -> str:
        return "OWNED"


# A field left at OWNED takes its default from the config type of the module that uses it, so each default
# is written once. That type is imported when a section is built, not here: `sala-report --help` imports this
# module and must not load retrieval.
OWNED: Any = _Owned()


def _fill_owned(section: Any, owner: str) -> None:
    """Give the OWNED fields of a settings section the defaults of its config type (`owner`, "module:Class")."""
    module, _, name = owner.partition(":")
    defaults = getattr(importlib.import_module(module), name)()
    for f in dataclasses.fields(section):
        if getattr(section, f.name) is OWNED:
            value = getattr(defaults, f.name)
            setattr(section, f.name, list(value) if isinstance(value, tuple) else value)


@dataclass
class SearchSettings:
    """Web search. Queries go only to the engines listed here, in this order (the first is the default)."""

    web: bool = True
    engines: list[str] = OWNED
    region: str = OWNED
    safesearch: Literal["on", "moderate", "off"] = OWNED
    timelimit: Literal["", "d", "w", "m", "y"] = OWNED  # any time, or the last day, week, month, year
    max_results: int = OWNED
    min_interval_s: float = OWNED
    max_retries: int = OWNED
    timeout_s: float = OWNED
    # Engines beside ddgs's: "arxiv", "openalex", and "searxng" (your instance; it may run on this machine).
    searxng_url: str = OWNED
    openalex_api_key: str = OWNED  # free at openalex.org; without one OpenAlex allows a few searches a day
    openalex_mailto: str = OWNED
    # Web results are read only from these domains (and their subdomains; empty: any), never from the excluded ones.
    include_domains: list[str] = field(default_factory=list)
    exclude_domains: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        _fill_owned(self, "sala_report.retrieval.search:SearchConfig")


@dataclass
class FetchSettings:
    """Reading pages. Private, loopback and link-local addresses are refused unless allowed here."""

    allow_private_addresses: bool = OWNED
    connect_timeout_s: float = OWNED
    read_timeout_s: float = OWNED
    total_timeout_s: float = OWNED
    max_bytes: int = OWNED
    max_redirects: int = OWNED
    per_host: int = OWNED
    concurrency: int = OWNED

    def __post_init__(self) -> None:
        _fill_owned(self, "sala_report.retrieval.fetch:FetchConfig")


@dataclass
class DocumentSettings:
    """Reading folders of documents: size caps per file (text-like; PDF and packaged formats) and a time
    limit per file."""

    max_text_bytes: int = OWNED
    max_file_bytes: int = OWNED
    timeout_s: float = OWNED

    def __post_init__(self) -> None:
        _fill_owned(self, "sala_report.retrieval.documents:DocumentConfig")


@dataclass
class WarpSettings:
    """Budgets and sampling for the WARP loop (warp.md §1.8)."""

    max_steps: int = 140
    max_expands: int = 12
    max_depth: int = 3
    max_retries: int = 3
    hard_mode: bool = True
    temperature: float = 0.7
    top_p: float = 0.8
    repetition_penalty: float = 1.0  # >1 discourages loops (helps very small models; the released pipeline uses none)
    max_tokens: int = 2048
    context_tokens: int = 0  # 0: take the model's own context length
    max_sections: int = 12  # top-level sections of the first outline (hard mode asks for at least 3)
    passages_for_plan: int = 20  # evidence for the first outline
    passages_per_search: int = 10  # evidence for each section
    passage_chars: int = 1200  # longest passage shown; prompts shrink further to fit the context
    thought_chars: int = 600  # longest <thought> the grammar allows
    support_threshold: float = 0.25  # cited sentences sharing fewer of their words with the passage are flagged
    constrained: bool = True  # constrain every answer to the action grammar
    # "full": our own prompts; "compact": short ones for tiny models that copy instruction text; "agentcpm": the
    # released pipeline's structure for AgentCPM-Report; "auto": agentcpm for AgentCPM-Report (by its name or
    # path), compact for in-process models under 1B parameters (the embedded default), full otherwise
    prompt_style: Literal["auto", "full", "compact", "agentcpm"] = "auto"
    # A folder with your copies of the released surveycpm_*.jinja templates: rendered instead, as the released
    # pipeline renders them ("" : the built-in prompts)
    prompt_dir: str = ""
    no_repeat_ngram: int = (
        4  # compact prompts: no answer repeats a run of this many tokens or copies the prompt's (0: off, else >= 3)
    )
    # "evidence": answers are chosen from the documents (verbatim sentences, their headings); "generate": the model
    # writes; "auto": evidence for in-process models under 1B parameters when prompt_style is "auto"
    writing: Literal["auto", "evidence", "generate"] = "auto"
    # The report the person asks for (issue 15); `run` flags override these. "short" halves the sections and
    # skips expanding, "long" adds half again and doubles the expands (on top of budgets fitted to the machine)
    length: Literal["short", "standard", "long"] = "standard"
    language: str = ""  # the report's language, e.g. "zh" or "German" ("": the question's)
    instructions: str = ""  # audience, tone, what to cover: the text, or @FILE for a file's
    outline: str = ""  # a Markdown file of headings to write instead of a planned outline ("": plan one)
    review_plan: bool = False  # stop after the first outline so the person can edit it; `resume` goes on
    clarify: bool = False  # ask up to three questions about scope before searching; their answers reach every prompt


@dataclass
class UISettings:
    """The terminal app. `keymap` maps binding ids (listed on the help screen, F1) to keys, e.g.
    `pause = "ctrl+space"`; the keys replace that binding's defaults."""

    theme: str = "textual-dark"
    keymap: dict[str, str] = field(default_factory=dict)


@dataclass
class Settings:
    paths: PathSettings = field(default_factory=PathSettings)
    model: ModelSettings = field(default_factory=ModelSettings)
    search: SearchSettings = field(default_factory=SearchSettings)
    fetch: FetchSettings = field(default_factory=FetchSettings)
    documents: DocumentSettings = field(default_factory=DocumentSettings)
    warp: WarpSettings = field(default_factory=WarpSettings)
    ui: UISettings = field(default_factory=UISettings)


def default_config_path(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    if env.get(ENV_PREFIX + "CONFIG"):
        return Path(env[ENV_PREFIX + "CONFIG"]).expanduser()
    return PlatformDirs(APP_NAME).user_config_path / "config.toml"


def load_settings(
    config_path: Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build settings with the documented precedence: flags > environment > config file > defaults.

    `overrides` uses dotted keys (`"search.web": False`); environment variables are
    `SALA_REPORT_<SECTION>__<FIELD>` (e.g. `SALA_REPORT_SEARCH__ENGINES=duckduckgo,brave`), plus
    `SALA_REPORT_HOME` for the data dir. Every value is checked as it is read (type, range, allowed
    choices); a ConfigError names each bad key and where it came from.
    """
    env = os.environ if env is None else env
    settings = Settings()
    problems: list[ConfigError] = []

    def put(dotted: str, value: Any, origin: str) -> None:
        try:
            _set(settings, dotted, value, origin=origin)
        except ConfigError as e:
            problems.append(e)

    path = config_path or default_config_path(env)
    if path.exists():
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path}: {e}", hint="Fix the file or move it aside.") from e
        for section, values in data.items():
            if not isinstance(values, dict):
                problems.append(ConfigError(f"{path}: [{section}] must be a table, got {type(values).__name__}"))
                continue
            for key, value in values.items():
                put(f"{section}.{key}", value, str(path))
    for name, value in env.items():
        if name.startswith(ENV_PREFIX) and "__" in name:
            section, _, key = name[len(ENV_PREFIX) :].lower().partition("__")
            put(f"{section}.{key}", value, name)
    if env.get(ENV_PREFIX + "HOME"):
        put("paths.data_dir", env[ENV_PREFIX + "HOME"], ENV_PREFIX + "HOME")
    for dotted, value in (overrides or {}).items():
        if value is not None:
            put(dotted, value, "command line")
    try:  # a rule between two fields, once every place has had its say
        check_quantize(settings.model)
    except ConfigError as e:
        problems.append(e)
    if problems:  # all of them at once, so one edit of the file can fix everything
        hint = next((p.hint for p in problems if p.hint), None)
        raise ConfigError("; ".join(str(p) for p in problems), hint=hint)
    return settings


def check_quantize(model: ModelSettings) -> None:
    """Raise ConfigError when model.quantize cannot load model.source (a local model only)."""
    problem = quantize_problem(model.quantize, model.source) if model.backend == "local" else None
    if problem is not None:
        raise ConfigError(problem, hint=QUANTIZE_HINT)


def _set(settings: Settings, dotted: str, value: Any, *, origin: str) -> None:
    section_name, _, key = dotted.partition(".")
    section = getattr(settings, section_name, None)
    if section is None or not dataclasses.is_dataclass(section):
        raise ConfigError(f"{origin}: unknown settings section '{section_name}'")
    fields = {f.name: f for f in dataclasses.fields(section)}
    if key not in fields:
        raise ConfigError(
            f"{origin}: unknown setting '{dotted}'",
            hint=f"[{section_name}] accepts: {', '.join(sorted(fields))}",
        )
    try:
        converted = _coerce(getattr(section, key), value)
        problem = _problem(dotted, converted, _choices(type(section), key))
    except (TypeError, ValueError, OverflowError) as e:
        problem = str(e)
    if problem:
        raise ConfigError(f"{origin}: {dotted}: {problem}")
    setattr(section, key, converted)


def _coerce(current: Any, value: Any) -> Any:
    """Convert `value` to the type of the default it replaces. Strings come from the environment and are
    parsed; from TOML a value must already have the right kind (`web = 5` is refused, not read as true)."""
    if isinstance(current, bool):
        if isinstance(value, bool):
            return value
        lowered = value.strip().lower() if isinstance(value, str) else None
        if lowered not in {"1", "0", "true", "false", "yes", "no", "on", "off"}:
            raise ValueError(f"expected true or false, got {value!r}")
        return lowered in {"1", "true", "yes", "on"}
    if isinstance(current, Path):
        if not isinstance(value, (str, Path)) or not str(value).strip():
            raise ValueError(f"expected a folder path, got {value!r}")
        return Path(str(value)).expanduser()
    if isinstance(current, list):
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"expected a list of names, got {value!r}")
        return [v.strip() for v in value]
    if isinstance(current, dict):
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise ValueError(f"expected a table of strings, got {value!r}")
        return {str(k): v for k, v in value.items()}
    if isinstance(current, (int, float)):
        return _number(value, whole=isinstance(current, int))
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {value!r}")
    return value


def _number(value: Any, *, whole: bool) -> int | float:
    """A finite number (a whole one for integer settings); TOML's `inf` and `1e999` are refused here."""
    kind = "a whole number" if whole else "a number"
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"expected {kind}, got {value!r}")
    try:
        number = float(value) if isinstance(value, str) else value
    except ValueError:
        raise ValueError(f"expected {kind}, got {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"expected a finite number, got {value!r}")
    if whole:
        if number != int(number):
            raise ValueError(f"expected {kind}, got {value!r}")
        return int(number)
    return float(number)


def _choices(section_type: type, key: str) -> tuple[Any, ...] | None:
    """The allowed values of a field annotated `Literal[...]` (a closed set), else None."""
    hint = get_type_hints(section_type)[key]
    return get_args(hint) if get_origin(hint) is Literal else None


Check = Callable[[Any], "str | None"]  # the problem with a value, or None when it is fine


def _at_least(low: float) -> Check:
    return lambda v: None if v >= low else f"must be at least {low}, got {v}"


def _above(low: float) -> Check:
    return lambda v: None if v > low else f"must be more than {low}, got {v}"


def _within(low: float, high: float) -> Check:
    return lambda v: None if low <= v <= high else f"must be between {low} and {high}, got {v}"


def _matching(pattern: str, what: str) -> Check:
    return lambda v: None if re.fullmatch(pattern, v) else f"must be {what}, got {v!r}"


def _filled(v: str) -> str | None:
    return None if v.strip() else "must not be empty"


def _names(v: list[str]) -> str | None:
    if not v or not all(v):
        return f"must list at least one name, and no empty ones, got {v}"
    return None if len(set(v)) == len(v) else f"names must differ, got {v}"


def _engines(v: list[str]) -> str | None:
    """Names an engine has: ddgs would send an unknown name to another engine without a word."""
    from sala_report.retrieval.engines.base import known_engines

    known = known_engines()
    unknown = [name for name in v if known is not None and name not in known]
    return f"unknown engine {', '.join(unknown)}; known: {', '.join(known)}" if unknown else None


def _domains(v: list[str]) -> str | None:
    """Host names (empty: no limit); the same rule the --include-domain / --exclude-domain flags apply."""
    from sala_report.retrieval.domains import normalise_domain

    try:
        for entry in v:
            normalise_domain(entry)
    except ValueError as e:
        return str(e)
    return None


def _not_a_file(v: Path) -> str | None:
    return f"{v} is a file, not a folder" if v.exists() and not v.is_dir() else None


def _keys(v: dict[str, str]) -> str | None:
    empty = sorted(k for k, keys in v.items() if not keys.strip())
    return f"no keys given for {', '.join(empty)}" if empty else None


def _anything(v: Any) -> None:
    return None


# Field rules beyond their type and Literal choices. Fields not listed get the rule of their type: numbers
# at least 0, lists at least one distinct name, tables non-empty values, paths not a file, strings anything.
RULES: dict[str, Check] = {
    "model.source": _filled,
    "model.device": _matching(r"auto|cpu|mps|cuda(:\d+)?", "auto, cpu, mps, cuda or cuda:N"),
    "model.base_url": _matching(r"https?://[^\s/]+(/\S*)?", "an http:// or https:// URL"),
    "model.request_timeout_s": _above(0),
    "search.engines": lambda v: _names(v) or _engines(v),
    "search.region": _matching(r"[a-z]{2}-[a-z]{2}", "a region like wt-wt (no region) or us-en"),
    "search.max_results": _within(1, 100),
    "search.timeout_s": _above(0),
    "search.searxng_url": lambda v: (
        None if not v else _matching(r"https?://[^\s/]+(/\S*)?", "an http:// or https:// URL")(v)
    ),
    "search.include_domains": _domains,
    "search.exclude_domains": _domains,
    "fetch.connect_timeout_s": _above(0),
    "fetch.read_timeout_s": _above(0),
    "fetch.total_timeout_s": _above(0),
    "fetch.max_bytes": _at_least(1),
    "fetch.per_host": _at_least(1),
    "fetch.concurrency": _at_least(1),
    "documents.max_text_bytes": _at_least(1),
    "documents.max_file_bytes": _at_least(1),
    "documents.timeout_s": _above(0),
    "warp.max_steps": _at_least(1),
    "warp.max_depth": _within(1, 6),
    "warp.temperature": _within(0, 2),
    "warp.top_p": lambda v: None if 0 < v <= 1 else f"must be more than 0 and at most 1, got {v}",
    "warp.repetition_penalty": _above(0),
    "warp.max_tokens": _at_least(16),
    "warp.max_sections": _at_least(1),
    "warp.passages_for_plan": _at_least(1),
    "warp.passages_per_search": _at_least(1),
    "warp.passage_chars": _at_least(50),
    "warp.thought_chars": _at_least(1),
    "warp.support_threshold": _within(0, 1),
    "warp.language": _matching(r"|[^\W\d_][\w ()-]{0,39}", "a language name or code such as zh or German"),
    "warp.instructions": lambda v: None if len(v) <= 4000 else f"must be at most 4000 characters, got {len(v)}",
    "warp.no_repeat_ngram": lambda v: None if v == 0 or v >= 3 else f"must be 0 (off) or at least 3, got {v}",
    "ui.theme": _filled,
}
_BY_TYPE: dict[type, Check] = {
    bool: _anything,
    int: _at_least(0),
    float: _at_least(0),
    list: _names,
    dict: _keys,
    str: _anything,
}


def _problem(dotted: str, value: Any, choices: tuple[Any, ...] | None) -> str | None:
    if choices is not None and value not in choices:
        return f"must be one of {', '.join(repr(c) for c in choices)}, got {value!r}"
    rule = RULES.get(dotted) or (_not_a_file if isinstance(value, Path) else _BY_TYPE[type(value)])
    return rule(value)
