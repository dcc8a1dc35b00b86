"""The settings turned into the configs of the parts they drive: retrieval's search, fetch and document
configs, the domain filter, and the model behind the Generator protocol. The one place that knows both the
settings tree and the parts; the CLI commands, the run services (app/runs.py) and doctor build from here."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from sala_report.app.errors import ConfigError
from sala_report.app.settings import ModelSettings, Settings, check_quantize

if TYPE_CHECKING:
    from sala_report.app.warp.generator import Generator
    from sala_report.retrieval import FetchConfig, SearchConfig
    from sala_report.retrieval.documents import DocumentConfig
    from sala_report.retrieval.domains import DomainFilter


def fetch_config(settings: Settings, allow_private_addresses: bool = False) -> FetchConfig:
    from sala_report.retrieval import FetchConfig

    known = {f.name for f in dataclasses.fields(FetchConfig)}
    values = {key: value for key, value in dataclasses.asdict(settings.fetch).items() if key in known}
    values["allow_private_addresses"] = allow_private_addresses or settings.fetch.allow_private_addresses
    return FetchConfig(**values)


def document_config(settings: Settings, follow_links_outside: bool = False) -> DocumentConfig:
    from sala_report.retrieval.documents import DocumentConfig

    d = settings.documents
    return DocumentConfig(
        max_text_bytes=d.max_text_bytes,
        max_file_bytes=d.max_file_bytes,
        timeout_s=d.timeout_s,
        follow_links_outside=follow_links_outside,
    )


def search_config(settings: Settings) -> SearchConfig:
    """The search settings all engines share; `web_search_config` adds the API engines' addresses and keys."""
    from sala_report.retrieval import SearchConfig

    s = settings.search
    return SearchConfig(
        engines=tuple(s.engines),
        region=s.region,
        safesearch=s.safesearch,
        timelimit=s.timelimit,
        max_results=s.max_results,
        min_interval_s=s.min_interval_s,
        max_retries=s.max_retries,
        timeout_s=s.timeout_s,
    )


def web_search_config(settings: Settings) -> SearchConfig:
    """The search settings as retrieval's SearchConfig, the other engines' addresses and keys included."""
    s = settings.search
    return dataclasses.replace(
        search_config(settings),
        searxng_url=s.searxng_url,
        openalex_api_key=s.openalex_api_key,
        openalex_mailto=s.openalex_mailto,
    )


def domain_filter(settings: Settings) -> DomainFilter:
    """The person's include/exclude domain lists as retrieval's filter; one clear error for an entry that is no domain."""
    from sala_report.retrieval.domains import DomainFilter

    try:
        return DomainFilter.of(settings.search.include_domains, settings.search.exclude_domains)
    except ValueError as e:
        raise ConfigError(
            f"search.include_domains / exclude_domains: {e}",
            hint="Give host names such as nature.com (subdomains are included).",
        ) from e


def make_generator(
    model: ModelSettings, *, source: str | None = None, constrained: bool = True, progress=None
) -> Generator:
    """The generator the settings ask for: `model.backend` "local" (in-process) or "openai" (a server)."""
    if model.backend == "openai":
        from sala_report.app.warp.openai_http import MODES, OpenAIGenerator

        if model.structured_output not in MODES:
            raise ConfigError(
                f"model.structured_output is '{model.structured_output}'", hint=f"Use one of: {', '.join(MODES)}."
            )

        return OpenAIGenerator(
            model.base_url,
            source or model.served_model,
            api_key=model.api_key,
            timeout_s=model.request_timeout_s,
            structured_output=model.structured_output,
            max_retries=model.max_retries,
        )
    if model.backend != "local":
        raise ConfigError(f"unknown model backend '{model.backend}'", hint="Set model.backend to 'local' or 'openai'.")
    from sala_report.app.warp.generator import LocalGenerator

    # every path to a local model passes here (demo, ask on a stored session, the research screen), with a source
    # that may differ from the one the settings were checked with
    check_quantize(dataclasses.replace(model, source=source or model.source))
    return LocalGenerator.load(
        source or model.source,
        device=model.device,
        dtype=model.dtype,
        progress=progress,
        constrained=constrained,
        quantize=model.quantize,
    )
