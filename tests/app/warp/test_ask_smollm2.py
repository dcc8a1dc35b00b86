"""`ask` with the real embedded SmolLM2 on a session built by a real short evidence-mode run: the answer is
sentences of the sources copied verbatim, each cited with the number the report's References give it."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import torch

from sala_report.app.cli import main
from sala_report.app.warp import WarpStore
from sala_report.retrieval import Store

CORPUS = Path(__file__).parents[2] / "data" / "corpora" / "composting"


def flat(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.slow
def test_smollm2_answers_from_the_reports_sources_with_its_numbers(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SALA_REPORT_WARP__TEMPERATURE", "0")
    monkeypatch.setenv("SALA_REPORT_WARP__MAX_SECTIONS", "3")
    monkeypatch.setenv("SALA_REPORT_WARP__MAX_EXPANDS", "0")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # two cores shared with the test runner
    try:
        question = "How do I make good compost at home?"
        args = ["run", question, "--headless", "--docs", str(CORPUS), "--no-web", "--json"]
        assert main([*args, "--out", str(tmp_path / "r.md")]) == 0
        session_id = json.loads(capsys.readouterr().out)["session_id"]
        assert main(["ask", session_id, "Why does a compost pile smell bad?", "--json"]) == 0
        got = json.loads(capsys.readouterr().out)
    finally:
        torch.set_num_threads(threads)
    markdown = (tmp_path / "r.md").read_text(encoding="utf-8")
    _, _, refs = markdown.partition("\n## References\n")
    numbers = {loc: int(n) for n, loc in re.findall(r"^\[(\d+)\] .*? — (\S+)$", refs, re.M)}
    store = Store.open(Path(os.environ["SALA_REPORT_HOME"]) / "sala.db")
    try:
        texts = {n: flat(store.source_by_location(loc).text) for loc, n in numbers.items()}
        writes = [s.seconds for s in WarpStore(store).steps(session_id) if s.kind == "write"]
    finally:
        store.close()
    assert got["mode"] == "evidence" and got["cited"], got
    pieces = re.findall(r"\s*(.+?) \[(\d+)\]([.!?])", got["answer"])
    assert pieces and flat(re.sub(r"\s*(.+?) \[(\d+)\]([.!?])", "", got["answer"])) == "", got["answer"]
    for words, n, end in pieces:
        assert int(n) in texts, (n, numbers)  # one of the report's references, by the report's number
        assert f"{words}{end}" in texts[int(n)], (words, n)  # verbatim in the source that number names
    print(f"ask {got['seconds']:.1f} s; write steps {min(writes):.1f}-{max(writes):.1f} s")
