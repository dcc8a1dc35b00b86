"""`sala-report sources ...` end to end against the loopback server (the store lives under SALA_REPORT_HOME)."""

from __future__ import annotations

import json
import os
import shutil
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from click.testing import CliRunner
from read_only import read_only, run_without_write_access  # noqa: F401 (a fixture)

from sala_report.app.cli import _register_commands, cli, main

DATA = Path(__file__).resolve().parents[1] / "data" / "retrieval"


@pytest.fixture
def run():
    _register_commands()
    runner = CliRunner()

    def invoke(*args: str):
        result = runner.invoke(cli, list(args), catch_exceptions=False)
        return result

    return invoke


def test_add_url_list_show_and_search(run, server):
    added = run("sources", "add", server.base + "/article", "--allow-private-addresses", "--json")
    assert added.exit_code == 0, added.output
    source = json.loads(added.output)
    assert source["status"] == "ok" and source["title"] == "Urban Foxes Rewrite Their Night Routes"
    assert source["chunks"] >= 1

    listed = json.loads(run("sources", "list", "--json").output)
    assert [s["id"] for s in listed["sources"]] == [source["id"]]

    shown = json.loads(run("sources", "show", str(source["id"]), "--json").output)
    assert "railway embankments" in shown["text"] and shown["metadata"]["author"] == "Mira Okafor"

    found = json.loads(run("sources", "search", "fox foraging corridors", "--json").output)
    assert found["passages"][0]["location"] == server.base + "/article"
    assert found["passages"][0]["chunk_id"]

    text = run("sources", "search", "fox foraging corridors")
    assert text.exit_code == 0 and "[1] Urban Foxes" in text.output


def test_store_lives_in_the_data_dir(run, server):
    run("sources", "add", server.base + "/notes.md", "--allow-private-addresses")
    assert (Path(os.environ["SALA_REPORT_HOME"]) / "sala.db").exists()


def test_add_folder_then_re_add_is_incremental(run, tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    shutil.copy(DATA / "report.pdf", docs / "report.pdf")
    (docs / "a.md").write_text("# Alpha\n\nAlpine meadows bloom in July.\n", encoding="utf-8")
    first = json.loads(run("sources", "add", str(docs), "--json").output)
    assert (first["added"], first["unchanged"], first["failed"]) == (2, 0, 0)
    again = run("sources", "add", str(docs))
    assert again.exit_code == 0 and "0 added, 0 updated, 2 unchanged" in again.output


def test_folder_with_unreadable_files_exits_partial(run, tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "ok.md").write_text("Readable.\n", encoding="utf-8")
    (docs / "bad.pdf").write_bytes(b"%PDF-1.4 broken")
    result = run("sources", "add", str(docs))
    assert result.exit_code == 3 and "not readable" in result.output


def test_private_address_is_refused_without_the_flag(server, capsys):
    code = main(["sources", "add", server.base + "/article"])
    err = capsys.readouterr().err
    assert code == 1
    assert "loopback" in err and "--allow-private-addresses" in err


def test_unreadable_page_and_missing_things_give_clear_errors(server, capsys):
    assert main(["sources", "add", server.base + "/image", "--allow-private-addresses"]) == 1
    assert "image/png" in capsys.readouterr().err
    assert main(["sources", "add", "/no/such/path"]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    assert main(["sources", "show", "999"]) == 2
    assert "no source with id 999" in capsys.readouterr().err
    assert main(["sources", "add", "ftp://example.com/x"]) == 2


def test_empty_store_lists_nothing(run):
    assert "No sources stored yet." in run("sources", "list").output
    assert json.loads(run("sources", "search", "anything", "--json").output)["passages"] == []


def test_folder_summary_lists_skipped_files_with_the_reason(run, tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "ok.md").write_text("# Fine\n\nReadable words.\n", encoding="utf-8")
    (docs / "guide.rst").write_text("Guide\n=====\n\nKestrels hover.\n", encoding="utf-8")
    (docs / "photo.jpg").write_bytes(b"\xff\xd8\xff")
    os.mkfifo(docs / "fifo.txt")
    secret = tmp_path / "secret.txt"
    secret.write_text("private words\n", encoding="utf-8")
    (docs / "out.txt").symlink_to(secret)
    with open(os.fsencode(docs) + b"/caf\xe9.md", "wb") as f:
        f.write(b"# Cafe\n\nEspresso.\n")
    result = run("sources", "add", str(docs))
    assert result.exit_code == 0, result.output
    assert "3 added" in result.output and "3 skipped" in result.output
    assert f"skipped: {docs / 'photo.jpg'}: .jpg: not a type that is read" in result.output
    assert f"skipped: {docs / 'fifo.txt'}: a FIFO" in result.output
    assert f"skipped: {docs / 'out.txt'}: a link to {secret}, outside the folder" in result.output
    payload = json.loads(run("sources", "add", str(docs), "--follow-links-outside", "--json").output)
    assert payload["added"] == 1 and [s["reason"][:6] for s in payload["skipped"]] == [".jpg: ", "a FIFO"]


def test_adding_a_fifo_directly_is_a_clear_error(tmp_path, capsys):
    os.mkfifo(tmp_path / "pipe.md")
    assert main(["sources", "add", str(tmp_path / "pipe.md")]) == 2
    assert "a FIFO, not a regular file" in capsys.readouterr().err


def test_list_help_describes_the_columns_it_prints(run, tmp_path, capsys):
    (tmp_path / "a.md").write_text("# Alpha\n\nWords.\n", encoding="utf-8")
    (tmp_path / "b.md").write_text("", encoding="utf-8")
    run("sources", "add", str(tmp_path / "a.md"))
    assert main(["sources", "add", str(tmp_path / "b.md")]) == 1
    lines = run("sources", "list").output.splitlines()
    assert " file 1 chunks — Alpha — " in lines[0] and " file empty — b.md — " in lines[1]
    help_text = " ".join(run("sources", "list", "--help").output.split())
    assert "chunk count (or the status when not readable" in help_text


class SearxngHandler(BaseHTTPRequestHandler):
    """A SearXNG instance's JSON answer: the results lead to the loopback fixture servers' pages."""

    results: list[dict] = []
    queries: list[str] = []

    def log_message(self, format, *args):
        pass

    def do_GET(self):
        parts = urlsplit(self.path)
        self.queries.append(parts.path + "?" + parts.query)
        body = json.dumps(
            {
                "query": "q",
                "number_of_results": 0,
                "results": self.results,
                "answers": [],
                "suggestions": [],
                "unresponsive_engines": [],
            }
        ).encode()
        self.send_response(200 if parts.path == "/search" else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_web_search_uses_the_searxng_address_and_the_domain_filter_from_the_settings(
    run, server, public_server, monkeypatch
):
    SearxngHandler.results = [
        {"url": f"{public_server.base}/notes.md", "title": "Field notes", "content": "Owls.", "engine": "brave"},
        {"url": f"{server.base}/article", "title": "Urban foxes", "content": "Foxes at night.", "engine": "brave"},
    ]
    searxng = ThreadingHTTPServer(("127.0.0.1", 0), SearxngHandler)
    threading.Thread(target=searxng.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    monkeypatch.setenv("SALA_REPORT_SEARCH__ENGINES", "searxng")
    monkeypatch.setenv("SALA_REPORT_SEARCH__SEARXNG_URL", f"http://127.0.0.1:{searxng.server_address[1]}")
    monkeypatch.setenv("SALA_REPORT_SEARCH__EXCLUDE_DOMAINS", "127.0.0.2")
    public_server.hits.clear()
    try:
        result = run("sources", "search", "fox foraging corridors", "--web", "--allow-private-addresses", "--json")
    finally:
        searxng.shutdown()
        searxng.server_close()
    assert result.exit_code == 0, result.output
    found = json.loads(result.output)
    assert found["degraded"] is None and any(q.startswith("/search?") for q in SearxngHandler.queries)
    assert found["passages"][0]["location"] == server.base + "/article"
    assert public_server.hits == []  # excluded by search.exclude_domains: never fetched
    listed = json.loads(run("sources", "list", "--json").output)["sources"]
    assert [s["location"] for s in listed] == [server.base + "/article"]


# Each command line through the CLI's entry point, in one child that cannot override file modes; prints
# [{"code", "out", "err"}] as JSON. A traceback would end the child and fail the test.
RUN_ALL = """
import contextlib, io, json, sys
from sala_report.app.cli import main
results = []
for args in json.loads(sys.argv[1]):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(args)
    results.append({"code": code, "out": out.getvalue(), "err": err.getvalue()})
print(json.dumps(results))
"""


@pytest.mark.parametrize("what", ["folder", "file"])
def test_a_read_only_store_still_lists_shows_and_searches_and_refuses_adding(run, tmp_path, read_only, what):
    data = Path(os.environ["SALA_REPORT_HOME"])
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "owls.md").write_text("# Barn owls\n\nBarn owls nest in the old hay loft.\n", encoding="utf-8")
    assert run("sources", "add", str(docs)).exit_code == 0
    store = data / "sala.db"
    assert sorted(p.name for p in data.iterdir()) == ["sala.db"]  # closed: the WAL is folded in
    before = store.read_bytes()
    read_only(data if what == "folder" else store)
    argv = [
        ["--data-dir", str(data), *args]
        for args in (
            ["sources", "list", "--json"],
            ["sources", "show", "1", "--json"],
            ["sources", "search", "owls nest", "--json"],
            ["sources", "add", str(docs)],
        )
    ]
    child = run_without_write_access([sys.executable, "-c", RUN_ALL, json.dumps(argv)])
    assert child.returncode == 0 and "Traceback" not in child.stderr, child.stderr
    listed, shown, found, added = json.loads(child.stdout)
    assert listed["code"] == 0 and [s["title"] for s in json.loads(listed["out"])["sources"]] == ["Barn owls"], listed
    assert shown["code"] == 0 and "hay loft" in json.loads(shown["out"])["text"], shown
    assert found["code"] == 0 and json.loads(found["out"])["passages"][0]["title"] == "Barn owls", found
    assert added["code"] == 1 and "Traceback" not in added["err"], added
    assert "Error: Read-only data folder" in added["err"], added
    assert store.read_bytes() == before
