"""`sala-report sources ...` end to end against the loopback server (the store lives under SALA_REPORT_HOME)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

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
