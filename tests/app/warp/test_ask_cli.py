"""`sala-report ask` and `export --with-questions` headless, against the loopback OpenAI-compatible server
(its grammar checked by xgrammar) on a session made by a real `run` over documents on disk."""

from __future__ import annotations

import json
import re
from types import SimpleNamespace

import pytest
from fake_openai import FakeOpenAI, point_app_at
from test_cli import DOCS
from warp_fakes import Policy, kind_of

from sala_report.app.cli import main

ASKED = "Answer in one short paragraph"


def answer(body: dict) -> str:
    prompt = body["messages"][1]["content"]
    if ASKED in prompt:
        keys = re.findall(r"^\[(textid\d+)\]", prompt, re.M)
        return f"<thought>use them</thought>\n<action>Prices fell a lot \\cite{{{keys[0]}}}. More \\cite{{{keys[-1]}}}.</action>"
    request = SimpleNamespace(prompt=prompt)
    return Policy(expands=0)(kind_of(request), request)


@pytest.fixture
def session(monkeypatch, tmp_path, capsys):
    docs = tmp_path / "docs"
    docs.mkdir()
    for name, text in DOCS.items():
        (docs / name).write_text(text, encoding="utf-8")
    with FakeOpenAI(answer) as fake:
        point_app_at(monkeypatch, fake, expands=0)
        out = tmp_path / "r.md"
        code = main(
            ["run", "How is renewable energy changing electricity?", "--headless", "--docs", str(docs)]
            + ["--no-web", "--json", "--out", str(out)]
        )
        summary = json.loads(capsys.readouterr().out)
        assert code == 0 and summary["status"] == "done"
        yield summary["session_id"], out.read_text(encoding="utf-8"), tmp_path


def references(markdown: str) -> dict[int, str]:
    _, _, refs = markdown.partition("\n## References\n")
    return {int(n): title for n, title in re.findall(r"^\[(\d+)\] (.*?) — ", refs, re.M)}


def test_ask_json_cites_the_reports_references_and_export_appends_it(session, capsys):
    session_id, markdown, tmp_path = session
    refs = references(markdown)
    assert main(["ask", session_id[:4], "What happened to solar module prices?", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    cited = [int(n) for n in re.findall(r"\[(\d+)\]", got["answer"])]
    assert cited and set(cited) <= set(refs) and got["cited"] == sorted(set(cited))
    assert {r["n"]: r["title"] for r in got["references"]} == {n: refs[n] for n in got["cited"]}
    assert "textid" not in got["answer"]

    out = tmp_path / "with.md"
    assert main(["export", session_id, "--with-questions", "--out", str(out)]) == 0
    exported = out.read_text(encoding="utf-8")
    body, _, _ = exported.partition("\n## References\n")
    assert "## Questions and answers" in body and got["answer"] in body
    assert main(["export", session_id, "--out", str(tmp_path / "plain.md")]) == 0
    assert "Questions and answers" not in (tmp_path / "plain.md").read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("args", "message"), [(["ask", "zzzz", "why?"], "no session 'zzzz'"), (["ask", "ID", "  "], "question is empty")]
)
def test_bad_input_is_one_clear_usage_error(session, capsys, args, message):
    session_id, _, _ = session
    args = [a if a != "ID" else session_id for a in args]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_plain_output_is_the_answer_then_its_references(session, capsys):
    session_id, markdown, _ = session
    _, _, refs = markdown.partition("\n## References\n")
    assert main(["ask", session_id, "What happened to solar module prices?"]) == 0
    answer, _, listed = capsys.readouterr().out.partition("\n\n")
    cited = sorted(set(re.findall(r"\[(\d+)\]", answer)))
    assert cited and [line.split("]")[0][1:] for line in listed.strip().splitlines()] == cited
    for line in listed.strip().splitlines():
        assert line in refs  # the same "[n] title — location" line as the report's References


def test_no_store_yet_is_a_usage_error(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("SALA_REPORT_HOME", str(tmp_path / "empty"))
    assert main(["ask", "abcd", "why?"]) == 2
    err = capsys.readouterr().err
    assert "no sessions yet" in err and "Traceback" not in err
