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
