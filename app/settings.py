"""The one settings tree: defaults, then the TOML file in the XDG config dir, then environment, then flags.

Only this module reads configuration files and environment variables; every other part receives
the slice it needs as plain values.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from platformdirs import PlatformDirs

from sala_report.app.errors import ConfigError

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
    cache_dir: Path = field(default_factory=lambda: PlatformDirs(APP_NAME).user_cache_path)
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
    backend: str = "local"
    device: str = "auto"
    dtype: str = "auto"
    base_url: str = "http://127.0.0.1:8000/v1"
    served_model: str = ""
    api_key: str = ""
    request_timeout_s: float = 600.0
    # How a served model is constrained: "json_schema" (response_format), "grammar" (vLLM structured_outputs), "none"
    structured_output: str = "json_schema"
    max_retries: int = 3  # retries of a failed request to a served model, with exponential backoff


@dataclass
class SearchSettings:
    """Web search. Queries go only to the engines listed here, in this order (the first is the default)."""

    web: bool = True
    engines: list[str] = field(default_factory=lambda: ["duckduckgo"])
    region: str = "wt-wt"
    safesearch: str = "moderate"
    timelimit: str = ""
    max_results: int = 8
    min_interval_s: float = 1.0
    max_retries: int = 3
    timeout_s: float = 10.0


@dataclass
class FetchSettings:
    """Reading pages. Private, loopback and link-local addresses are refused unless allowed here."""

    allow_private_addresses: bool = False
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 20.0
    total_timeout_s: float = 45.0
    max_bytes: int = 15_000_000
    max_redirects: int = 5
    per_host: int = 2
    concurrency: int = 8


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
    # "full": the released prompts; "compact": short ones for tiny models that copy instruction text;
    # "auto": compact for in-process models under 1B parameters (the embedded default), full otherwise
    prompt_style: str = "auto"
    no_repeat_ngram: int = 4  # compact prompts: no answer repeats a run of this many tokens or copies the prompt's (0: off, else >= 3)


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
    `SALA_REPORT_HOME` for the data dir.
    """
    env = os.environ if env is None else env
    settings = Settings()
    path = config_path or default_config_path(env)
    if path.exists():
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path}: {e}", hint="Fix the file or move it aside.") from e
        for section, values in data.items():
            if not isinstance(values, dict):
                raise ConfigError(f"{path}: [{section}] must be a table, got {type(values).__name__}")
            for key, value in values.items():
                _set(settings, f"{section}.{key}", value, origin=str(path))
    for name, value in env.items():
        if name.startswith(ENV_PREFIX) and "__" in name:
            section, _, key = name[len(ENV_PREFIX):].lower().partition("__")
            _set(settings, f"{section}.{key}", value, origin=name)
    if env.get(ENV_PREFIX + "HOME"):
        _set(settings, "paths.data_dir", env[ENV_PREFIX + "HOME"], origin=ENV_PREFIX + "HOME")
    for dotted, value in (overrides or {}).items():
        if value is not None:
            _set(settings, dotted, value, origin="command line")
    return settings


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
    current = getattr(section, key)
    setattr(section, key, _coerce(current, value, f"{origin}: {dotted}"))


def _coerce(current: Any, value: Any, where: str) -> Any:
    """Convert `value` to the type of the default it replaces (strings come from the environment)."""
    try:
        if isinstance(current, bool):
            if isinstance(value, str):
                lowered = value.strip().lower()
                if lowered not in {"1", "0", "true", "false", "yes", "no", "on", "off"}:
                    raise ValueError(f"expected a boolean, got {value!r}")
                return lowered in {"1", "true", "yes", "on"}
            return bool(value)
        if isinstance(current, Path):
            return Path(str(value)).expanduser()
        if isinstance(current, list):
            if isinstance(value, str):
                return [v.strip() for v in value.split(",") if v.strip()]
            return [str(v) for v in value]
        if isinstance(current, dict):
            if not isinstance(value, dict):
                raise ValueError(f"expected a table, got {value!r}")
            return {str(k): str(v) for k, v in value.items()}
        if isinstance(current, int):
            return int(value)
        if isinstance(current, float):
            return float(value)
        return str(value)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: {e}") from e
