"""`--json` of a finished run that asked clarifying questions lists them with the person's answers, whether
they were answered by `resume --answers`, up front by `run --answers`, or left unanswered by a plain `resume`;
a run without --clarify has no such key. Against a vLLM-like server on loopback, as test_clarify_cli."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from fake_openai import FakeOpenAI, point_app_at
from test_clarify import ASKED, clarify_answer, is_clarify
from test_cli_brief import DOCS, cli
from warp_fakes import Policy, kind_of


def answer(body: dict) -> str:
    prompt = SimpleNamespace(prompt=body["messages"][-1]["content"])
    return clarify_answer(ASKED) if is_clarify(prompt) else Policy(expands=0)(kind_of(prompt), prompt)


@pytest.fixture
def run_args(tmp_path, monkeypatch):
    folder = tmp_path / "docs"
    folder.mkdir()
    for name, text in DOCS.items():
        (folder / name).write_text(text, encoding="utf-8")
    with FakeOpenAI(answer, flavour="vllm") as fake:
        point_app_at(monkeypatch, fake, expands=0)
        yield ["run", "Solar?", "--headless", "--docs", str(folder), "--no-web", "--json"]


def test_resume_answers_are_listed_with_their_questions(run_args, capsys, tmp_path):
    code, out, err = cli(capsys, *run_args, "--clarify")
    waiting = json.loads(out)
    assert code == 5 and "clarifications" not in waiting, err  # waiting: `questions` lists them
    answers = tmp_path / "answers.txt"
    answers.write_text("Germany\n-\n", encoding="utf-8")
    code, out, err = cli(capsys, "resume", waiting["session_id"], "--headless", "--json", "--answers", str(answers))
    summary = json.loads(out)
    assert code == 0 and summary["status"] == "done", err
    assert summary["clarifications"] == [
        {"question": ASKED[0], "answer": "Germany"},
        {"question": ASKED[1], "answer": ""},
    ]


def test_answers_given_up_front_and_questions_left_unanswered_are_listed(run_args, capsys, tmp_path):
    answers = tmp_path / "answers.txt"
    answers.write_text("2. Since 2015\n", encoding="utf-8")
    code, out, err = cli(capsys, *run_args, "--clarify", "--answers", str(answers))
    assert code == 0, err
    assert json.loads(out)["clarifications"] == [
        {"question": ASKED[0], "answer": ""},
        {"question": ASKED[1], "answer": "Since 2015"},
    ]
    code, out, _ = cli(capsys, *run_args, "--clarify")
    code, out, err = cli(capsys, "resume", json.loads(out)["session_id"], "--headless", "--json")
    assert code == 0, err
    assert [c["answer"] for c in json.loads(out)["clarifications"]] == ["", ""]


def test_a_run_without_clarify_lists_none(run_args, capsys):
    code, out, err = cli(capsys, *run_args)
    assert code == 0 and "clarifications" not in json.loads(out), err
