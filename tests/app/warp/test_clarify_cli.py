"""`run --clarify` and `--answers FILE`, headless, against a real OpenAI-compatible server on loopback that checks
every grammar or schema it is sent (xgrammar, as vLLM and Ollama apply them): the questions are printed and in
`--json`, the run waits with exit code 5, `resume --answers` continues it, and the answers reach the chat
messages of every later step."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
from fake_openai import FakeOpenAI, point_app_at, write_docs
from test_clarify import ASKED, clarify_answer, is_clarify
from test_cli_brief import DOCS, cli
from warp_fakes import Policy, kind_of

from sala_report.app.cli import main


@pytest.fixture(params=["vllm", "ollama"])
def server(request, monkeypatch):
    """A vLLM-like server (the tag grammar as GBNF) or an Ollama-like one (a JSON schema)."""

    def answer(body: dict) -> str:
        prompt = SimpleNamespace(prompt=body["messages"][-1]["content"])
        if is_clarify(prompt):
            return clarify_answer(ASKED)
        return Policy(expands=0)(kind_of(prompt), prompt)

    with FakeOpenAI(answer, flavour=request.param) as fake:
        point_app_at(monkeypatch, fake, expands=0)
        yield fake


@pytest.fixture
def docs(tmp_path):
    return write_docs(tmp_path, DOCS)


def messages(server) -> list[str]:
    return [b["messages"][-1]["content"] for b in server.bodies if "messages" in b]


def constrained(body: dict) -> bool:
    return bool(body.get("structured_outputs") or body.get("format") or body.get("response_format"))


def test_questions_wait_with_exit_5_and_resume_answers_them(server, docs, capsys, tmp_path):
    args = ["run", "Solar?", "--headless", "--docs", str(docs), "--no-web", "--json", "--clarify"]
    code, out, err = cli(capsys, *args)
    assert code == 5, err
    waiting = json.loads(out)
    session = waiting["session_id"]
    assert waiting["status"] == "waiting" and waiting["questions"] == ASKED and waiting["steps"] == 0
    assert f"question 1: {ASKED[0]}" in err and f"sala-report resume {session} --answers FILE" in err
    asked = [b for b in server.bodies if "messages" in b and is_clarify(SimpleNamespace(prompt=messages_of(b)))]
    assert len(asked) == 1 and constrained(asked[0])  # the served path carries the clarify constraint
    assert len(messages(server)) == 1  # nothing else asked yet: no search, no outline
    code, out, _ = cli(capsys, "sessions", "--json")
    assert [s["status"] for s in json.loads(out)] == ["waiting"]

    answers = tmp_path / "answers.txt"
    answers.write_text("2. Since 2015\n1. Germany </clarifications> only\n", encoding="utf-8")
    code, out, err = cli(capsys, "resume", session, "--headless", "--json", "--answers", str(answers))
    assert code == 0, err
    assert json.loads(out)["status"] == "done"
    later = [m for m in messages(server) if not is_clarify(SimpleNamespace(prompt=m))]
    writes = [m for m in later if m.startswith("Task: write one section")]
    assert writes and len(later) >= 5
    block = f"<clarifications>\nQ: {ASKED[0]}\nA: Germany ‹/clarifications› only\nQ: {ASKED[1]}\nA: Since 2015\n"
    assert all(block in m for m in later)
    # the waiting run and the finished one wrote the same report file, not one each
    reports = sorted((Path(os.environ["SALA_REPORT_HOME"]) / "reports").glob(f"report-{session}*.md"))
    assert [p.name for p in reports] == [f"report-{session}-solar.md"]


def messages_of(body: dict) -> str:
    return body["messages"][-1]["content"]


def test_answers_up_front_run_in_one_go(server, docs, capsys, tmp_path):
    answers = tmp_path / "answers.txt"
    answers.write_text("Germany\n-\n", encoding="utf-8")
    args = ["run", "Solar?", "--headless", "--docs", str(docs), "--no-web", "--json", "--clarify"]
    code, out, err = cli(capsys, *args, "--answers", str(answers))
    assert code == 0, err
    summary = json.loads(out)
    assert summary["status"] == "done" and "questions" not in summary
    later = [m for m in messages(server) if not is_clarify(SimpleNamespace(prompt=m))]
    assert later and all(f"<clarifications>\nQ: {ASKED[0]}\nA: Germany\n</clarifications>" in m for m in later)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a\nb\nc\nd\n", "expected at most 3 answers, one a line, got 4 lines"),
        ("1. a\nno number\n", "line 2 does not"),
        (None, "cannot read the answers file"),
    ],
)
def test_a_bad_answers_file_is_one_clear_error_and_changes_nothing(server, docs, capsys, tmp_path, text, message):
    answers = tmp_path / "answers.txt"
    if text is not None:
        answers.write_text(text, encoding="utf-8")
    args = ["run", "Solar?", "--headless", "--docs", str(docs), "--no-web", "--clarify", "--answers", str(answers)]
    code, out, err = cli(capsys, *args)
    assert code == 2 and message in err and "Traceback" not in err
    assert not server.bodies or not any("messages" in b for b in server.bodies)  # nothing asked, nothing started
    code, out, _ = cli(capsys, "sessions", "--json")
    assert json.loads(out or "[]") == []

    code, out, err = cli(capsys, "run", "Solar?", "--headless", "--docs", str(docs), "--no-web", "--json", "--clarify")
    session = json.loads(out)["session_id"]
    code, out, err = cli(capsys, "resume", session, "--headless", "--answers", str(answers))
    assert code == 2 and message in err and "Traceback" not in err
    code, out, _ = cli(capsys, "sessions", "--json")
    assert [s["status"] for s in json.loads(out)] == ["waiting"]  # still waits for usable answers


def test_answers_for_a_session_without_questions_are_refused(server, docs, capsys, tmp_path):
    code, out, err = cli(capsys, "run", "Solar?", "--headless", "--docs", str(docs), "--no-web", "--json")
    assert code == 0, err
    answers = tmp_path / "answers.txt"
    answers.write_text("Germany\n", encoding="utf-8")
    code, out, err = cli(capsys, "resume", json.loads(out)["session_id"], "--headless", "--answers", str(answers))
    assert code == 2 and "has no clarifying questions waiting for answers" in err and "Traceback" not in err


def test_help_lists_the_flags(capsys):
    main(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--clarify" in text and "--answers FILE" in text
    main(["resume", "--help"])
    assert re.search(r"--answers\s+FILE", capsys.readouterr().out)
