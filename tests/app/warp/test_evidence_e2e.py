"""End to end with the real default model in evidence mode (issue 11): `sala-report run --headless --docs
DIR --no-web --json` on SmolLM2-135M with default settings and a small corpus of our own. Every body
sentence must be a verbatim sentence of the source it cites, with no chatter, no sentence twice, titles
in words, at least three sections of at least two cited sentences each."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import torch
from warp_fakes import check_report

from sala_report.app.cli import main
from sala_report.app.warp.filler import FAMILIES
from sala_report.retrieval import Store

CORPUS = Path(__file__).parents[2] / "data" / "corpora" / "composting"
QUESTION = "How do I make good compost at home, and what goes wrong?"


def flat(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.slow
def test_smollm2_digests_a_corpus_in_its_own_words_only(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SALA_REPORT_WARP__TEMPERATURE", "0")  # everything else at its default
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # two cores shared with the test runner
    try:
        code = main(
            [
                "run",
                QUESTION,
                "--headless",
                "--docs",
                str(CORPUS),
                "--no-web",
                "--json",
                "--out",
                str(tmp_path / "r.md"),
            ]
        )
    finally:
        torch.set_num_threads(threads)
    out, err = capsys.readouterr()
    summary = json.loads(out)
    assert code == 0 and summary["status"] == "done", err
    markdown = (tmp_path / "r.md").read_text(encoding="utf-8")
    store = Store.open(Path(os.environ["SALA_REPORT_HOME"]) / "sala.db")
    try:
        check_report(store, summary["session_id"])
        sources = {s["n"]: flat(store.source_by_location(s["location"]).text) for s in summary["sources"]}
    finally:
        store.close()
    body, _, _ = markdown.partition("\n## References\n")
    sections = re.split(r"(?m)^#{2,4} ", body)[1:]
    assert len(sections) >= 3, markdown
    seen: set[str] = set()
    for section in sections:
        title, _, text = section.partition("\n")
        title = re.sub(r"^[\d.]+\s+", "", title)
        assert re.search(r"[A-Za-z]{3}", title), title
        # "sentence [n]." pieces: the text before each citation mark, with the end mark after it
        cited = re.findall(r"\s*(.+?) \[(\d+)\]([.!?])", flat(text))
        assert len(cited) >= 2, section
        assert flat(re.sub(r"\s*(.+?) \[(\d+)\]([.!?])", "", flat(text))) == "", section  # nothing uncited
        for words, n, end in cited:
            sentence = f"{words}{end}"
            assert sentence in sources[int(n)], (sentence, n)  # verbatim in the source it cites
            assert sentence not in seen, sentence
            seen.add(sentence)
            assert not any(p.search(sentence) for p in FAMILIES.values()), sentence
