"""The start screen's web domain fields (issue 15 item 4): read as the --include-domain / --exclude-domain flags
are, added to the settings' lists, stored with the session, and applied before any page is fetched (a SearXNG
instance on loopback offers one page on each of two hosts). A bad entry is one notification; nothing starts."""

from __future__ import annotations

import dataclasses
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import click
import pytest
from textual.widgets import Input, RadioSet
from tui_helpers import make_services, until

from sala_report.app.runs import domain_list
from sala_report.app.tui.app import SalaApp
from sala_report.app.tui.screens.start import StartScreen
from sala_report.app.warp import WarpStore, events

pytestmark = pytest.mark.anyio
QUESTION = "How did renewable energy grow?"
PAGE = (
    "<html><head><title>{title}</title></head><body><article><h1>{title}</h1><p>Solar power and wind energy grew "
    "quickly as module prices fell and batteries stored surplus electricity for the evening peak.</p>"
    "</article></body></html>"
)


class SearXNG(BaseHTTPRequestHandler):
    """/search answers in SearXNG's JSON format with a page on `localhost` and one on `127.0.0.1`."""

    fetched: list[str] = []

    def log_message(self, format, *args):
        pass

    def do_GET(self):
        port = self.server.server_port
        if self.path.startswith("/search"):
            results = [
                {"url": f"http://localhost:{port}/kept.html", "title": "Kept", "content": "Solar power grew."},
                {"url": f"http://127.0.0.1:{port}/dropped.html", "title": "Dropped", "content": "Wind energy grew."},
            ]
            body, kind = json.dumps({"query": "q", "results": results}).encode(), "application/json"
        elif self.path in ("/kept.html", "/dropped.html"):
            self.fetched.append(self.path)
            body, kind = PAGE.format(title=self.path[1:-5].title()).encode(), "text/html; charset=utf-8"
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def searxng():
    server = ThreadingHTTPServer(("127.0.0.1", 0), SearXNG)
    SearXNG.fetched = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def web_services(tmp_path, searxng: str):
    services = make_services(tmp_path, max_expands=0)
    services.settings.search = dataclasses.replace(
        services.settings.search,
        engines=["searxng"],
        searxng_url=searxng,
        min_interval_s=0.0,
        include_domains=["science.org"],  # the settings' list: the start screen's entries add to it
    )
    services.settings.fetch.allow_private_addresses = True  # the pages are on loopback
    return services


async def test_the_domain_fields_are_stored_with_the_session_and_filter_the_web(tmp_path, searxng):
    services = web_services(tmp_path, searxng)
    form = StartScreen(question=QUESTION, web=True)
    app = SalaApp(services, start_form=form)
    async with app.run_test(size=(120, 50)) as pilot:
        assert form.query_one("#sources-choice", RadioSet).pressed_button.name == "web"
        form.query_one("#include-domains", Input).value = "localhost, https://www.Nature.com/articles/x"
        form.query_one("#exclude-domains", Input).value = "*.Pinterest.com  127.0.0.1,"
        form.query_one("#start-run").press()
        await until(pilot, lambda: services.count(events.Finished) == 1, what="the run to finish")
    finished = next(e for e in services.seen if isinstance(e, events.Finished))
    record = WarpStore(services.store).session(finished.session_id)
    assert record.options["include_domains"] == ["science.org", "localhost", "www.nature.com"]
    assert record.options["exclude_domains"] == ["pinterest.com", "127.0.0.1"]
    # only the page on an included host was read; the other was never fetched
    locations = {s.location for s in services.store.sources(with_text=False)}
    assert any(loc.endswith("/kept.html") and "localhost" in loc for loc in locations), locations
    assert not any(loc.endswith("/dropped.html") for loc in locations)
    assert SearXNG.fetched and "/dropped.html" not in SearXNG.fetched
    services.close()


async def test_a_bad_domain_is_one_notification_and_nothing_starts(tmp_path, searxng):
    services = web_services(tmp_path, searxng)
    form = StartScreen(question=QUESTION, web=True)
    app = SalaApp(services, start_form=form)
    async with app.run_test(size=(120, 50)) as pilot:
        form.query_one("#exclude-domains", Input).value = "pinterest.com, user@evil"
        form.query_one("#start-run").press()
        await pilot.pause(0.2)
        assert app.screen is form and services.seen == []
        messages = [n.message for n in app._notifications]
        assert messages == ["Web domains: expected a domain such as example.org, got 'user@evil'"]
    assert WarpStore(services.store).sessions() == []
    services.close()


def test_domain_lists_read_commas_and_spaces_as_the_flags_read_each_entry():
    assert domain_list(" nature.com,arxiv.org  *.Example.ORG ,, https://blogs.nature.com/x nature.com") == (
        "nature.com",
        "arxiv.org",
        "example.org",
        "blogs.nature.com",
    )
    assert domain_list("") == ()
    with pytest.raises(ValueError, match="expected a domain such as example.org, got 'https://'"):
        domain_list("nature.com https://")


def test_the_flags_read_their_values_with_the_same_function():
    from sala_report.app.commands.research import run

    ctx = run.make_context(
        "run", ["q", "--include-domain", "nature.com, *.ArXiv.org", "--include-domain", "nature.com"]
    )
    assert ctx.params["include_domains"] == ("nature.com", "arxiv.org")
    with pytest.raises(click.BadParameter, match="got 'user@evil'"):
        run.make_context("run", ["q", "--exclude-domain", "pinterest.com user@evil"])
