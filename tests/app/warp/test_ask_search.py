"""`ask --search`: a SearXNG instance and a web page, both on loopback (SearXNG's JSON answer shape), add a
new source to the answer, numbered after the report's references, whose numbers stay as the report has them."""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from test_ask import Answering
from test_cli import DOCS
from warp_fakes import ScriptedGenerator
from warp_fakes import settings as warp_settings

from sala_report.app.runs import LocalServices, RunRequest
from sala_report.app.settings import load_settings
from sala_report.app.warp.ask import ask_session
from sala_report.app.warp.generator import GenResult

PAGE = (
    "<html><head><title>Tidal power explained</title></head><body><article><h1>Tidal power</h1>"
    "<p>Tidal turbines generate electricity from predictable tidal currents near coasts, and their module "
    "prices fell slowly compared with solar power over the last decade.</p></article></body></html>"
)


class Web(BaseHTTPRequestHandler):
    def log_message(self, format, *args):
        pass

    def do_GET(self):
        base = f"http://127.0.0.1:{self.server.server_port}"
        if self.path.startswith("/search"):
            result = {"url": f"{base}/tidal.html", "title": "Tidal power explained", "content": "Tidal turbines."}
            body, kind = json.dumps({"query": "q", "results": [result]}).encode(), "application/json"
        elif self.path == "/tidal.html":
            body, kind = PAGE.encode(), "text/html; charset=utf-8"
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class RunThenAnswer(ScriptedGenerator):
    def __init__(self):
        super().__init__()
        self.answering = Answering(lambda keys: " ".join(f"Fact \\cite{{{k}}}." for k in keys))

    def generate(self, request, *, on_delta=None, cancel=None, on_restart=None) -> GenResult:
        if "Answer in one short paragraph" in request.prompt:
            return self.answering.generate(request)
        return super().generate(request, on_delta=on_delta, cancel=cancel, on_restart=on_restart)


@pytest.fixture
def web():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Web)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def test_search_adds_a_new_source_numbered_after_the_reports(tmp_path, web):
    docs = tmp_path / "docs"
    docs.mkdir()
    for name, text in DOCS.items():
        (docs / name).write_text(text, encoding="utf-8")
    settings = load_settings(overrides={"paths.data_dir": tmp_path / "data"}, env={})
    settings.warp = warp_settings(max_expands=0)
    settings.search.engines = ["searxng"]
    settings.search.searxng_url = web
    settings.search.min_interval_s = 0.0
    settings.fetch.allow_private_addresses = True
    generator = RunThenAnswer()
    services = LocalServices(settings, generator=generator)
    try:
        engine = services.start(RunRequest("How is renewable energy changing electricity?", web=False, docs=docs))
        result = engine.run()
        assert result.status == "done"
        markdown = services.report_markdown(result.session_id)
        _, _, refs = markdown.partition("\n## References\n")
        numbers = {loc: int(n) for n, loc in re.findall(r"^\[(\d+)\] .*? — (\S+)$", refs, re.M)}
        answer = ask_session(services, result.session_id, "tidal turbines module prices", search=True)
    finally:
        services.close()
    by_location = {r.location: r.number for r in answer.references}
    new = {loc: n for loc, n in by_location.items() if loc not in numbers}
    assert list(new) == [f"{web}/tidal.html"] and new[f"{web}/tidal.html"] == len(numbers) + 1
    assert all(by_location[loc] == n for loc, n in numbers.items() if loc in by_location)
    assert {int(n) for n in re.findall(r"\[(\d+)\]", answer.text)} == set(by_location.values())
    assert answer.search_problem is None


def test_a_search_that_fails_says_so_and_answers_from_the_report(tmp_path):
    settings = load_settings(overrides={"paths.data_dir": tmp_path / "data"}, env={})
    settings.warp = warp_settings(max_expands=0)
    settings.search.engines = ["searxng"]
    settings.search.searxng_url = "http://127.0.0.1:9"  # nothing listens there
    settings.search.max_retries = 0
    settings.fetch.allow_private_addresses = True
    docs = tmp_path / "docs"
    docs.mkdir()
    for name, text in DOCS.items():
        (docs / name).write_text(text, encoding="utf-8")
    services = LocalServices(settings, generator=RunThenAnswer())
    try:
        engine = services.start(RunRequest("How is renewable energy changing electricity?", web=False, docs=docs))
        session_id = engine.run().session_id
        answer = ask_session(services, session_id, "solar module prices", search=True)
    finally:
        services.close()
    assert answer.search_problem and answer.cited
