"""Loopback HTTP servers serving real fixture pages, and the fakes retrieval tests share."""

from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[1] / "data" / "retrieval"
HUGE_BYTES = 50 * 1024 * 1024


class FixtureServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128  # the fetch tests open many connections at once

    def __init__(self, host: str):
        super().__init__((host, 0), FixtureHandler)
        self.hits: list[str] = []
        self.headers_seen: dict[str, dict[str, str]] = {}  # path -> request headers
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        self.redirect_target = ""  # where /to-private sends clients
        self.stop = threading.Event()

    @property
    def base(self) -> str:
        return f"http://{self.server_address[0]}:{self.server_address[1]}"


class FixtureHandler(BaseHTTPRequestHandler):
    server: FixtureServer

    def log_message(self, format, *args):  # keep test output quiet
        pass

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        with self.server.lock:
            self.server.hits.append(path)
            self.server.headers_seen[path] = dict(self.headers.items())
        route = ROUTES.get(path)
        try:
            if route is None:
                self._send(404, "text/plain", b"not found")
            else:
                route(self)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client stopped reading, as it should for oversized or slow bodies

    def _send(self, status: int, content_type: str | None, body: bytes, headers: dict | None = None):
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def redirect(self, location: str, status: int = 302):
        self._send(status, "text/html", b"", {"Location": location})


def _file(name: str, content_type: str | None):
    return lambda h: h._send(200, content_type, (DATA / name).read_bytes())


def _huge(h: FixtureHandler):
    """50 MB with no Content-Length: only streaming with a cap stops it."""
    h.send_response(200)
    h.send_header("Content-Type", "text/html")
    h.end_headers()
    piece = b"<p>" + b"x" * (1024 * 1024 - 7) + b"</p>\n"
    for _ in range(HUGE_BYTES // len(piece)):
        if h.server.stop.is_set():
            return
        h.wfile.write(piece)


def _huge_declared(h: FixtureHandler):
    h.send_response(200)
    h.send_header("Content-Type", "text/html")
    h.send_header("Content-Length", str(HUGE_BYTES))
    h.end_headers()
    h.wfile.write(b"<html>")


def _drip(h: FixtureHandler):
    """Answers, then sends one byte every 0.2 s forever: each read succeeds, the whole never ends."""
    h.send_response(200)
    h.send_header("Content-Type", "text/html")
    h.end_headers()
    while not h.server.stop.is_set():
        h.wfile.write(b"a")
        h.wfile.flush()
        time.sleep(0.2)


def _hold(h: FixtureHandler):
    """Counts concurrent requests, to check the per-host limit."""
    with h.server.lock:
        h.server.in_flight += 1
        h.server.max_in_flight = max(h.server.max_in_flight, h.server.in_flight)
    time.sleep(0.3)
    with h.server.lock:
        h.server.in_flight -= 1
    h._send(200, "text/plain", b"Held page about lighthouse keepers and their logbooks.")


ROUTES = {
    "/article": _file("article.html", "text/html; charset=utf-8"),
    "/report.pdf": _file("report.pdf", "application/pdf"),
    "/octet.pdf": _file("report.pdf", "application/octet-stream"),
    "/cp1252": _file("cp1252.html", "text/html"),
    "/koi8.txt": lambda h: h._send(
        200,
        "text/plain; charset=koi8-r",
        "Мурманск - крупнейший город за Полярным кругом; порт не замерзает зимой.".encode("koi8-r"),
    ),
    "/notes.md": lambda h: h._send(200, "text/markdown", b"# Field notes\n\nOwls nest in the old barn loft.\n"),
    "/malformed": _file("malformed.html", "text/html"),
    "/empty": lambda h: h._send(200, "text/html", b""),
    "/blank": lambda h: h._send(200, "text/html", b"<html><head></head><body>  </body></html>"),
    "/image": lambda h: h._send(200, "image/png", b"\x89PNG\r\n\x1a\n" + b"\0" * 100),
    "/no-type": lambda h: h._send(200, None, b"\x00\x01binary blob"),
    "/huge": _huge,
    "/huge-declared": _huge_declared,
    "/drip": _drip,
    "/loop": lambda h: h.redirect("/loop2"),
    "/loop2": lambda h: h.redirect("/loop"),
    "/moved": lambda h: h.redirect("/article", 301),
    "/to-private": lambda h: h.redirect(h.server.redirect_target),
    "/to-metadata": lambda h: h.redirect("http://169.254.169.254/latest/meta-data/"),
    "/gone": lambda h: h._send(410, "text/html", b"gone"),
    "/hold/1": _hold,
    "/hold/2": _hold,
    "/hold/3": _hold,
    "/hold/4": _hold,
    "/hold/5": _hold,
    "/hold/6": _hold,
    **{
        f"/chain/{n}": (lambda n: lambda h: h.redirect(f"/chain/{n - 1}" if n > 0 else "/article"))(n)  # noqa: B023
        for n in range(12)
    },
}


def _start(host: str) -> FixtureServer:
    server = FixtureServer(host)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return server


@pytest.fixture(scope="session")
def server():
    srv = _start("127.0.0.1")
    yield srv
    srv.stop.set()
    srv.shutdown()
    srv.server_close()


@pytest.fixture(scope="session")
def public_server(server):
    """A second loopback server, on 127.0.0.2, that tests present as a public host (public.test)."""
    srv = _start("127.0.0.2")
    srv.redirect_target = f"{server.base}/article"
    yield srv
    srv.stop.set()
    srv.shutdown()
    srv.server_close()


@pytest.fixture(scope="session")
def silent_port():
    """A port that accepts TCP connections (the kernel's backlog) but never answers a byte."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    yield sock.getsockname()[1]
    sock.close()


class FakeClock:
    """Time that moves only when someone sleeps; records the sleeps."""

    def __init__(self):
        self.now = 1000.0
        self.sleeps: list[float] = []

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(round(seconds, 6))
        self.now += seconds


@pytest.fixture
def clock():
    return FakeClock()
