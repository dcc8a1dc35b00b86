"""Pages served on loopback that used to be lost or to take minutes: misdeclared charsets, pages of many
megabytes, extraction that runs past its time limit."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from sala_report.retrieval import FetchConfig, Fetcher, Retriever, Store
from sala_report.retrieval.extract import bounded_html

ARTICLE = (
    "<html><head><title>Bog bodies</title></head><body><article><h1>Bog bodies</h1>"
    + "".join(
        f"<p>Peat bogs preserve skin and hair for millennia; finding number {i} was dated by "
        "radiocarbon to the iron age, and the acid water kept the stomach contents.</p>"
        for i in range(12)
    )
    + "</article></body></html>"
)


def _big_page(total_bytes: int) -> bytes:
    """An article followed by megabytes of the clutter heavy pages carry: inline scripts, styles, SVG,
    base64 images and deeply nested markup."""
    head = ARTICLE.replace("</article></body></html>", "</article>")
    clutter = (
        "<script>var data = ["
        + "1," * 50_000
        + "];</script><style>"
        + ".c{color:red}" * 5_000
        + "</style><svg>"
        + "<path d='M0 0'/>" * 2_000
        + "</svg><img src='data:image/png;base64,"
        + "A" * 100_000
        + "'>"
        + "<div>" * 50
        + "<ul>"
        + "<li><a href='/m'>menu item</a></li>" * 2_000
        + "</ul>"
        + "</div>" * 50
    )
    body = head + clutter * (total_bytes // len(clutter) + 1)
    return (body + "</body></html>").encode()


PAGES = {
    "/utf8-says-utf16": ("text/html; charset=utf-16", ARTICLE.encode("utf-8")),
    "/meta-says-utf16": ("text/html", ARTICLE.replace("<head>", '<head><meta charset="utf-16">').encode("utf-8")),
    "/real-utf16": (
        "text/html; charset=utf-16le",
        ARTICLE.replace("Bog bodies</h1>", "Tourbières</h1>").encode("utf-16-le"),
    ),
    "/text-says-utf16": ("text/plain; charset=utf-16", b"Peat cutters found the bodies by hand."),
}


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, format, *args):
        pass

    def do_GET(self):
        content_type, body = self.server.pages.get(self.path, ("text/plain", b"not found"))
        self.send_response(200 if self.path in self.server.pages else 404)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass


@pytest.fixture(scope="module")
def site():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    server.pages = dict(PAGES)
    server.pages["/big"] = ("text/html; charset=utf-8", _big_page(3_000_000))
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _add(base: str, path: str, **config):
    fetcher = Fetcher(FetchConfig(allow_private_addresses=True, **config))
    return Retriever(Store.open(":memory:"), fetcher=fetcher).add_url(base + path)


@pytest.mark.parametrize("path", ["/utf8-says-utf16", "/meta-says-utf16"])
def test_utf8_page_declaring_utf16_is_read(site, path):
    source = _add(site, path)
    assert source.status == "ok", source.error
    assert source.title == "Bog bodies" and "radiocarbon to the iron age" in source.text


def test_utf8_text_declaring_utf16_is_read(site):
    source = _add(site, "/text-says-utf16")
    assert source.status == "ok" and source.text == "Peat cutters found the bodies by hand."


def test_a_real_utf16_page_still_follows_its_declaration(site):
    source = _add(site, "/real-utf16")
    assert source.status == "ok" and "Tourbières" in source.text and "radiocarbon" in source.text


def test_a_page_of_megabytes_is_cut_after_its_clutter_is_dropped(site):
    source = _add(site, "/big", max_html_chars=200_000)
    assert source.status == "ok", source.error
    assert source.metadata["truncated"] is True and source.metadata["bytes"] > 3_000_000
    assert "finding number 11 was dated" in source.text
    assert "var data" not in source.text and "base64" not in source.text


def test_extraction_past_its_time_limit_is_stopped_and_the_plain_text_kept(site):
    source = _add(site, "/big", extract_timeout_s=0.01)
    assert source.status == "ok", source.error
    assert source.metadata["extraction"] == "plain"
    assert source.title == "Bog bodies" and "finding number 11 was dated" in source.text


def test_bounded_html_is_linear_on_unclosed_scripts():
    hostile = "<p>kept</p>" + "<script>" * 200_000  # each start would rescan the rest with a lazy regex
    html, cut = bounded_html(hostile, 1_000_000)
    assert html == "<p>kept</p>" and cut is False
