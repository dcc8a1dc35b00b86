"""The --include-domain / --exclude-domain lists are stored with the session: `resume` reads the web through
the same filter even when today's settings say otherwise."""

from __future__ import annotations

import dataclasses

from warp_fakes import ScriptedGenerator
from warp_fakes import settings as warp_settings

from sala_report.app.runs import LocalServices
from sala_report.app.settings import load_settings
from sala_report.app.tui.services import RunRequest
from sala_report.app.warp import WarpStore


def _services(tmp_path, include: list[str], exclude: list[str]) -> LocalServices:
    settings = load_settings(overrides={"paths.data_dir": tmp_path / "data"}, env={})
    settings.warp = warp_settings()
    settings.search = dataclasses.replace(settings.search, include_domains=include, exclude_domains=exclude)
    return LocalServices(settings, generator=ScriptedGenerator())


def test_resume_keeps_the_domain_lists_the_session_started_with(tmp_path):
    first = _services(tmp_path, ["nature.com"], ["example.org"])
    try:
        engine = first.start(RunRequest("How do coral reefs recover?", web=True))
        session_id = engine.session_id
        options = WarpStore(first.store).session(session_id).options
        assert (options["include_domains"], options["exclude_domains"]) == (["nature.com"], ["example.org"])
    finally:
        first.close()

    later = _services(tmp_path, [], ["other.net"])  # the settings changed since
    try:
        resumed = later.resume(session_id)
        domains = resumed.retriever.domains
        assert (domains.include, domains.exclude) == (("nature.com",), ("example.org",))
        assert domains.allows("https://www.nature.com/articles/x") and not domains.allows("https://other.net/")
    finally:
        later.close()


def test_a_session_stored_before_the_lists_were_kept_gets_todays(tmp_path):
    services = _services(tmp_path, ["nature.com"], [])
    try:
        engine = services.start(RunRequest("How do coral reefs recover?", web=True))
        with WarpStore(services.store).transaction():
            services.store.db.execute(
                "UPDATE warp_sessions SET options = json_remove(options, '$.include_domains', '$.exclude_domains') "
                "WHERE id = ?",
                [engine.session_id],
            )
        services.settings.search = dataclasses.replace(services.settings.search, include_domains=["science.org"])
        domains = services.resume(engine.session_id).retriever.domains
        assert domains.include == ("science.org",)
    finally:
        services.close()
