"""CLI commands: `sala-report sources add|search|list|show|exclude` over the source store. Bodies delegate to
retrieval (and `exclude` to the session's WARP store)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from urllib.parse import urlsplit

import click

from sala_report.app.errors import EXIT_PARTIAL, SalaError, UsageError
from sala_report.app.settings import Settings
from sala_report.app.wiring import document_config, domain_filter, fetch_config, web_search_config
from sala_report.retrieval import (
    FetchConfig,
    Fetcher,
    Retriever,
    Source,
    Store,
    WebSearch,
    ingest_file,
    ingest_folder,
)
from sala_report.retrieval.documents import location_of
from sala_report.retrieval.errors import RetrievalError

SKIPPED_SHOWN = 20  # skipped files listed by name; the rest are counted (--json lists all)


def open_store(settings: Settings, *, for_reading: bool = False) -> Store:
    """The source store; `for_reading` opens an existing one read-only where it cannot be written (a read-only
    file, folder or disk), so listing, showing and offline search still work there."""
    path = settings.paths.store_path
    if for_reading and path.is_file():
        return Store.open_for_reading(path)
    return Store.open(path)


_json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
_private_option = click.option(
    "--allow-private-addresses",
    is_flag=True,
    help="Also read pages on loopback, private and link-local addresses (an intranet wiki, a local server).",
)


@click.group("sources")
def sources() -> None:
    """The source store: add files, folders and pages; search and read what is stored."""


@sources.command("add")
@click.argument("target")
@_private_option
@click.option(
    "--follow-links-outside",
    is_flag=True,
    help="Also read files that links inside the folder point to outside it (by default they are skipped).",
)
@_json_option
@click.pass_context
def add(
    ctx: click.Context, target: str, allow_private_addresses: bool, follow_links_outside: bool, as_json: bool
) -> None:
    """Add a web page (URL), a document, or a folder of documents (md, txt, rst, html, pdf, docx, odt, epub;
    re-adding is incremental). Files that are not read are listed with the reason."""
    settings = ctx.obj.settings
    with open_store(settings) as store:
        if "://" in target:
            _add_url(store, target, fetch_config(settings, allow_private_addresses), as_json)
            return
        path = Path(target).expanduser()
        if not path.exists():
            raise UsageError(f"{target}: no such file or folder", hint="Give a path, or a URL starting with https://")
        try:
            config = document_config(settings, follow_links_outside)
            if path.is_dir():
                report = ingest_folder(store, path, config=config)
                payload = {
                    "folder": location_of(str(path.resolve())),
                    "added": report.added,
                    "updated": report.updated,
                    "unchanged": report.unchanged,
                    "deleted": report.deleted,
                    "failed": report.failed,
                    "source_ids": sorted(report.source_ids),
                    "errors": [{"path": p, "error": e} for p, e in report.errors],
                    "skipped": [{"path": p, "reason": r} for p, r in report.skipped],
                }
                _emit(payload, as_json, lambda: _folder_lines(payload))
                if report.failed:
                    ctx.exit(EXIT_PARTIAL)
                return
            outcome, source_id, error = ingest_file(store, path, config=config)
        except RetrievalError as e:
            raise UsageError(str(e)) from e
        source = store.source(source_id)
        _emit(_source_json(source, outcome=outcome), as_json, lambda: [_source_line(source, outcome)])
        if error:
            raise SalaError(f"{path}: {error}", title="Document not readable")


def _add_url(store: Store, url: str, config: FetchConfig, as_json: bool) -> None:
    if urlsplit(url).scheme not in ("http", "https"):
        raise UsageError(f"{url}: only http and https URLs can be added")
    source = Retriever(store, fetcher=Fetcher(config)).add_url(url)
    _emit(_source_json(source), as_json, lambda: [_source_line(source)])
    if source.status != "ok":
        hint = None
        if source.failure == "refused" and not config.allow_private_addresses:
            hint = "If you trust this address, add --allow-private-addresses."
        raise SalaError(f"{url}: {source.error}", hint=hint, title="Page not readable")


@sources.command("search")
@click.argument("query")
@click.option("-k", "k", default=8, show_default=True, help="How many passages.")
@click.option("--web", is_flag=True, help="Search the web first and store the pages found (uses search.engines).")
@_private_option
@_json_option
@click.pass_context
def search(ctx: click.Context, query: str, k: int, web: bool, allow_private_addresses: bool, as_json: bool) -> None:
    """Find passages about QUERY in the stored sources (offline), or on the web with --web."""
    settings = ctx.obj.settings
    with open_store(settings, for_reading=not web) as store:
        if web:
            retriever = Retriever(
                store,
                search=WebSearch(web_search_config(settings), store=store),
                fetcher=Fetcher(fetch_config(settings, allow_private_addresses)),
                domains=domain_filter(settings),
            )
            result = retriever.gather([query], k)
            passages, degraded = result.passages, result.degraded
        else:
            passages, degraded = store.passages(query, k), None
    payload = {"query": query, "degraded": degraded, "passages": [dataclasses.asdict(p) for p in passages]}

    def lines() -> list[str]:
        out = [f"search degraded: {degraded}"] if degraded else []
        if not passages:
            out.append("No passages found.")
        for i, p in enumerate(passages, 1):
            out += [
                f"[{i}] {p.title} — {p.location}  (source {p.source_id}, {p.chunk_id}, score {p.score:.3g})",
                "    " + " ".join(p.text.split())[:400],
            ]
        return out

    _emit(payload, as_json, lines)


@sources.command("list")
@_json_option
@click.pass_context
def list_sources(ctx: click.Context, as_json: bool) -> None:
    """List stored sources, one a line: id, kind, chunk count (or the status when not readable: empty,
    failed, deleted), title and location."""
    with open_store(ctx.obj.settings, for_reading=True) as store:
        rows = store.sources(with_text=False)
    payload = {"sources": [_source_json(s) for s in rows]}
    _emit(payload, as_json, lambda: [_source_line(s) for s in rows] or ["No sources stored yet."])


@sources.command("show")
@click.argument("source_id", type=int)
@_json_option
@click.pass_context
def show(ctx: click.Context, source_id: int, as_json: bool) -> None:
    """Show one stored source with its metadata and extracted text."""
    with open_store(ctx.obj.settings, for_reading=True) as store:
        source = store.source(source_id)
    if source is None:
        raise UsageError(f"no source with id {source_id}", hint="`sala-report sources list` shows the ids.")
    payload = {**_source_json(source), "metadata": source.metadata, "text": source.text}

    def lines() -> list[str]:
        out = [_source_line(source), f"fetched: {source.fetched_at}"]
        out += [f"{key}: {value}" for key, value in source.metadata.items() if key != "page_offsets"]
        if source.error:
            out.append(f"error: {source.error}")
        return out + ["", source.text]

    _emit(payload, as_json, lines)


@sources.command("exclude")
@click.argument("session_id")
@click.argument("reference", type=int)
@click.option(
    "--keep-text",
    is_flag=True,
    help="Only remove the source's citations (a sentence it alone supported goes); do not rewrite the sections.",
)
@_json_option
@click.pass_context
def exclude(ctx: click.Context, session_id: str, reference: int, keep_text: bool, as_json: bool) -> None:
    """Exclude the source cited as [REFERENCE] in a session's report: its citations leave the report, the
    sections that cited it are written again on `resume`, and the session never uses it again."""
    from sala_report.app.warp import WarpStore
    from sala_report.app.warp.exclusion import exclude_stored
    from sala_report.app.warp.phases import Budget

    warp = ctx.obj.settings.warp
    with open_store(ctx.obj.settings) as store:
        wstore = WarpStore(store)
        found = wstore.find_session(session_id)
        if found is None:
            raise UsageError(
                f"no session '{session_id}' (or the prefix matches several)", hint="`sala-report sessions` lists them."
            )
        budget = Budget(warp.max_steps, warp.max_expands, warp.max_depth, warp.max_retries)
        done = exclude_stored(wstore, found, reference, rewrite=not keep_text, budget=budget)
    payload = {"session_id": found, **dataclasses.asdict(done)}
    _emit(payload, as_json, lambda: [done.describe()])


def _emit(payload: dict, as_json: bool, lines) -> None:
    if as_json:
        click.echo(json.dumps(payload, ensure_ascii=False))
    else:
        for line in lines():
            click.echo(line)


def _source_json(source: Source, **extra) -> dict:
    return {
        "id": source.id,
        "kind": source.kind,
        "location": source.location,
        "title": source.title,
        "status": source.status,
        "error": source.error,
        "failure": source.failure,
        "chunks": source.chunk_count,
        "fetched_at": source.fetched_at,
        **extra,
    }


def _source_line(source: Source, outcome: str | None = None) -> str:
    state = source.status if source.status != "ok" else f"{source.chunk_count} chunks"
    prefix = f"{outcome}: " if outcome else ""
    title = source.title or "(untitled)"
    line = f"{prefix}[{source.id}] {source.kind} {state} — {title} — {source.location}"
    return line + (f"  ({source.error})" if source.error and source.status != "ok" else "")


def _folder_lines(payload: dict) -> list[str]:
    lines = [
        f"{payload['folder']}: {payload['added']} added, {payload['updated']} updated, "
        f"{payload['unchanged']} unchanged, {payload['deleted']} deleted, {payload['failed']} failed"
    ]
    if payload["skipped"]:
        lines[0] += f", {len(payload['skipped'])} skipped"
    lines += [f"  not readable: {e['path']}: {e['error']}" for e in payload["errors"]]
    lines += [f"  skipped: {s['path']}: {s['reason']}" for s in payload["skipped"][:SKIPPED_SHOWN]]
    if len(payload["skipped"]) > SKIPPED_SHOWN:
        lines.append(f"  … and {len(payload['skipped']) - SKIPPED_SHOWN} more skipped (--json lists them all)")
    return lines


COMMANDS: list = [sources]
