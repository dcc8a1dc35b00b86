"""Honest results (issue 11): a run whose sections fail the quality checks is not a silent `done` (the
summary and --json name the weak sections, the exit code is 3, as README says for partial reports), and
weak citations are marked in every export the way the TUI flags them."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
from fake_openai import FakeOpenAI, point_app_at, write_docs
from pypdf import PdfReader
from test_cli import DOCS, cli
from warp_fakes import Policy, answer, kind_of

from sala_report.app.warp.citations import CitationCheck, Registry
from sala_report.app.warp.report import WEAK_MARK, render_report, weak_pairs, weak_sections
from sala_report.app.warp.state import Outline

QUESTION = "How is renewable energy changing electricity?"
# shares no content word with any passage: every citation of it is weakly supported
UNSUPPORTED = "Penguins juggle violins beneath crimson volcanoes every Tuesday"


def weak_writer(body: dict) -> str:
    request = SimpleNamespace(prompt=body["messages"][1]["content"])
    kind = kind_of(request)
    if kind == "write":
        key = re.search(r'<evidence key="(textid\d+)"', request.prompt).group(1)
        return answer("x", f"{UNSUPPORTED} \\cite{{{key}}}. {UNSUPPORTED} again and again \\cite{{{key}}}.")
    return Policy(expands=0)(kind, request)


@pytest.fixture
def weak_server(monkeypatch):
    with FakeOpenAI(weak_writer) as fake:
        point_app_at(monkeypatch, fake)
        yield fake


@pytest.fixture
def docs(tmp_path) -> Path:
    return write_docs(tmp_path, DOCS)


def test_weak_sections_make_a_done_run_exit_3_and_are_named(weak_server, docs, capsys, tmp_path):
    out_md = tmp_path / "r.md"
    code, out, err = cli(
        capsys, "run", QUESTION, "--headless", "--docs", str(docs), "--no-web", "--json", "--out", str(out_md)
    )
    summary = json.loads(out)
    assert summary["status"] == "done" and code == 3, err
    weak = summary["quality"]["weak_sections"]
    assert [w["title"] for w in weak] == ["Solar power", "Storage", "Policy"]
    assert all("weakly supported" in w["reasons"][0] for w in weak)
    assert 'section 1 "Solar power" is weak' in err
    markdown = out_md.read_text(encoding="utf-8")
    assert markdown.count(f"]{WEAK_MARK}") == 6 and "weak support" in markdown

    session = summary["session_id"]
    for fmt in ("html", "pdf", "json"):
        path = tmp_path / f"r.{fmt}"
        assert cli(capsys, "export", session, "--format", fmt, "--out", str(path))[0] == 0
    html = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert html.count(WEAK_MARK) >= 6
    pdf_text = "".join(page.extract_text() for page in PdfReader(tmp_path / "r.pdf").pages)
    assert pdf_text.count(WEAK_MARK) >= 6
    exported = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))
    assert [s["weak_citations"] for s in exported["sections"]] == [2, 2, 2]
    assert all(WEAK_MARK in s["markdown"] for s in exported["sections"])
    assert exported["quality"]["weak_sections"] == weak


def test_a_strong_run_has_no_marks_and_exits_0(monkeypatch, docs, capsys, tmp_path):
    def policy(body: dict) -> str:
        request = SimpleNamespace(prompt=body["messages"][1]["content"])
        return Policy(expands=0)(kind_of(request), request)

    with FakeOpenAI(policy) as fake:
        point_app_at(monkeypatch, fake)
        code, out, err = cli(
            capsys,
            "run",
            QUESTION,
            "--headless",
            "--docs",
            str(docs),
            "--no-web",
            "--json",
            "--out",
            str(tmp_path / "r.md"),
        )
    summary = json.loads(out)
    assert code == 0 and summary["quality"]["weak_sections"] == [], err
    assert WEAK_MARK not in (tmp_path / "r.md").read_text(encoding="utf-8")


def test_each_quality_check_names_its_reason():
    outline = Outline()
    cited, uncited, numbered = (outline.new_node(t, "p") for t in ("Costs", "Grid", "1.1"))
    outline.sections = [cited, uncited, numbered]
    cited.content = "Solar got cheap \\cite{textid1}. Wind too \\cite{textid1}. Storage as well \\cite{textid1}."
    uncited.content = "Grids need upgrades for variable output."
    numbered.content = "Prices fell \\cite{textid1}."
    checks = [
        (cited.id, CitationCheck("textid1", "Solar got cheap.", 0.9, False)),
        (cited.id, CitationCheck("textid1", "Wind too.", 0.1, True)),
        (cited.id, CitationCheck("textid1", "Storage as well.", 0.1, True)),
        (numbered.id, CitationCheck("textid1", "Prices fell.", 0.9, False)),
    ]
    numbers = {cited.id: "1", uncited.id: "2", numbered.id: "3"}
    assert weak_sections(outline, checks, numbers) == [
        {"number": "1", "title": "Costs", "reasons": ["2 of 3 citations weakly supported"]},
        {"number": "2", "title": "Grid", "reasons": ["no citation"]},
        {"number": "3", "title": "1.1", "reasons": ["a title without letters"]},
    ]
    # one weak citation of three is not "most": the section passes
    assert weak_sections(outline, checks[:2] + checks[3:], numbers)[0]["title"] == "Grid"


def test_marks_follow_the_flagged_sentence_only():
    outline = Outline()
    node = outline.new_node("Costs", "p")
    outline.sections = [node]
    node.content = "Solar got cheap \\cite{textid1}. Wind too \\cite{textid1}."
    registry = Registry()
    registry.add("c1", 1, "Solar", "/docs/solar.md", "file", "Solar got cheap.")
    checks = [(node.id, CitationCheck("textid1", "Wind too.", 0.1, True))]
    markdown = render_report(outline, registry, weak=weak_pairs(checks))
    assert "Solar got cheap [1]. Wind too [1]⚑." in markdown
