"""`doctor` on the search engines: settings it can judge offline, and each engine asked on its own online
(a SearXNG instance on loopback speaking its JSON format)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from sala_report.app import doctor
from sala_report.app.errors import ConfigError
from sala_report.app.settings import load_settings


def _areas(checks):
    return {c.area: c for c in checks}


class Searxng(BaseHTTPRequestHandler):
    json_enabled = True

    def log_message(self, format, *args):
        pass

    def do_GET(self):
        if not self.json_enabled:
            body, status, kind = b"<h1>403 Forbidden</h1>", 403, "text/html"
        else:
            results = [
                {"url": "https://www.energy.gov/heat-pumps", "title": "Heat pumps", "content": "COP", "engine": "x"}
            ]
            body, status, kind = json.dumps({"query": "q", "results": results}).encode(), 200, "application/json"
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def searxng():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Searxng)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield server
    Searxng.json_enabled = True
    server.shutdown()
    server.server_close()


def test_offline_doctor_judges_engine_settings_and_domains(tmp_path):
    with pytest.raises(ConfigError, match="search.exclude_domains: expected a domain such as example.org, got 'a..b'"):
        load_settings(overrides={"search.exclude_domains": "pinterest.com, a..b"})
    settings = load_settings(overrides={"search.engines": "searxng,openalex,duckduckgo"})
    settings.search.exclude_domains = ["pinterest.com", "a..b"]  # as a settings object built elsewhere might hold
    found = _areas(doctor._search(settings, online=False))
    assert found["search searxng"].status == "fail" and "search.searxng_url" in found["search searxng"].fix
    assert found["search openalex"].status == "warn" and "openalex_api_key" in found["search openalex"].fix
    assert found["search domains"].status == "fail" and "'a..b'" in found["search domains"].detail


def test_online_doctor_asks_each_engine_on_its_own(searxng):
    url = f"http://127.0.0.1:{searxng.server_address[1]}"
    settings = load_settings(
        overrides={"search.engines": "searxng", "search.searxng_url": url, "search.include_domains": "energy.gov"}
    )
    found = _areas(doctor._search(settings, online=True))
    assert found["search searxng"].status == "ok" and found["search searxng"].detail == "answered"
    assert found["search domains"].detail == "only: energy.gov; never: none"
    Searxng.json_enabled = False
    found = _areas(doctor._search(settings, online=True))
    assert found["search searxng"].status == "warn" and "search.formats" in found["search searxng"].detail
