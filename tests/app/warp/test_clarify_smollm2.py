"""End to end with the real default model: `run --clarify --answers FILE --headless` on SmolLM2-135M (evidence
mode, as by default). Its one clarify call goes through the real grammar, the questions are stored with the
session, and the chat messages that reach the model in every later step carry the person's answers. The model
is wrapped only to record what it is sent; a tight step budget keeps the run short."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from test_smollm2_e2e import DOCS

from sala_report.app import wiring
from sala_report.app.cli import main
from sala_report.app.warp import WarpStore
from sala_report.app.warp.brief import Brief
from sala_report.app.warp.clarify import STOCK_QUESTIONS
from sala_report.retrieval import Store


class Recording:
    """The real generator, recording each request it is sent."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.requests: list = []

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def generate(self, request, **kwargs):
        self.requests.append(request)
        return self.inner.generate(request, **kwargs)


@pytest.mark.slow
def test_smollm2_asks_its_questions_and_every_later_prompt_carries_the_answers(tmp_path, monkeypatch, capsys):
    docs = tmp_path / "docs"
    docs.mkdir()
    for name, text in DOCS.items():
        (docs / name).write_text(text, encoding="utf-8")
    answers = tmp_path / "answers.txt"
    answers.write_text("1. Households in Germany\n2. City councillors\n3. -\n", encoding="utf-8")
    monkeypatch.setenv("SALA_REPORT_WARP__TEMPERATURE", "0")
    monkeypatch.setenv("SALA_REPORT_WARP__MAX_SECTIONS", "3")
    made: list[Recording] = []
    real = wiring.make_generator

    def recording(*args, **kwargs):
        made.append(Recording(real(*args, **kwargs)))
        return made[-1]

    monkeypatch.setattr(wiring, "make_generator", recording)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # two cores shared with the test runner
    try:
        code = main(
            [
                "run",
                "How is renewable energy changing electricity?",
                "--headless",
                "--docs",
                str(docs),
                "--no-web",
                "--model",
                "smollm2-135m",
                "--max-steps",
                "4",
                "--json",
                "--clarify",
                "--answers",
                str(answers),
            ]
        )
    finally:
        torch.set_num_threads(threads)
    out, err = capsys.readouterr()
    assert code in (0, 3), err  # the step budget may end it before every section is written
    summary = json.loads(out)
    store = Store.open(Path(os.environ["SALA_REPORT_HOME"]) / "sala.db")
    try:
        brief = Brief.from_options(WarpStore(store).session(summary["session_id"]).options)
    finally:
        store.close()
    assert 1 <= len(brief.questions) <= 3 and set(brief.questions) <= set(STOCK_QUESTIONS), brief
    assert brief.answers == ("Households in Germany", "City councillors", "")[: len(brief.questions)]
    requests = made[0].requests
    assert requests[0].constraint is not None and requests[0].constraint.kind == "clarify"
    later = requests[1:]
    assert len(later) >= 3  # search, outline, and at least one section
    block = "\n".join(f"Q: {q}\nA: {a}" for q, a in brief.clarified)
    assert brief.clarified and all(f"<clarifications>\n{block}\n</clarifications>" in r.prompt for r in later)
