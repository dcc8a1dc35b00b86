"""End to end with the real default model: `sala-report run --headless --docs DIR --no-web` on SmolLM2-135M,
through the outline, written sections and an expand-or-stop decision, with every citation resolving to
a stored source. Kept short: greedy decoding, small answers, three sections, a tight step budget."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import torch
from warp_fakes import check_report

from sala_report.app.cli import main
from sala_report.app.warp import WarpStore
from sala_report.retrieval import Store

DOCS = {
    "solar.md": "# Solar power\n\nSolar module prices fell by about ninety percent over a decade, so solar farms "
    "became the cheapest new electricity in many countries.\n\nRooftop solar panels let households "
    "sell surplus electricity back to the grid.\n",
    "storage.md": "# Battery storage\n\nLithium-ion batteries store surplus solar electricity and release it in the "
    "evening peak. Battery pack prices dropped as factories scaled up.\n",
    "wind.md": "# Wind energy\n\nOffshore wind turbines are larger than onshore ones and benefit from steadier sea "
    "winds. Wind farms need grid connections and storage to balance their variable output.\n",
}

SETTINGS = {
    "TEMPERATURE": "0",
    "MAX_TOKENS": "160",
    "THOUGHT_CHARS": "60",
    "MAX_SECTIONS": "3",
    "MAX_EXPANDS": "1",
    "MAX_RETRIES": "2",
    "PASSAGES_FOR_PLAN": "3",
    "PASSAGES_PER_SEARCH": "2",
    "PASSAGE_CHARS": "250",
    "WRITING": "generate",  # the model writing in its own words; evidence mode: test_evidence_e2e.py
}


@pytest.mark.slow
def test_smollm2_researches_a_local_corpus(tmp_path, monkeypatch, capsys):
    docs = tmp_path / "docs"
    docs.mkdir()
    for name, text in DOCS.items():
        (docs / name).write_text(text, encoding="utf-8")
    for key, value in SETTINGS.items():
        monkeypatch.setenv(f"SALA_REPORT_WARP__{key}", value)
    # Two cores shared with the test runner: one torch thread avoids oversubscribing them.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    started = time.perf_counter()
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
                "11",
                "--json",
            ]
        )
    finally:
        torch.set_num_threads(threads)
    seconds = time.perf_counter() - started
    out, err = capsys.readouterr()
    print(f"\nSmolLM2-135M end to end: {seconds:.1f} s wall\n{err}")
    assert code in (0, 3), err  # done, or partial when the model chose to expand and the step budget ran out
    summary = json.loads(out)
    assert Path(summary["report_paths"][0]).read_text(encoding="utf-8").startswith("# ")
    store = Store.open(Path(os.environ["SALA_REPORT_HOME"]) / "sala.db")
    try:
        steps = WarpStore(store).steps(summary["session_id"])
        ok = [s.kind for s in steps if s.ok]
        assert "init-plan" in ok and ok.count("write") >= 2 and "extend" in ok, [(s.kind, s.error) for s in steps]
        assert summary["citations"]["total"] >= 2 and summary["sources"]
        check_report(store, summary["session_id"])  # every [n] resolves to a stored source, every source is cited
    finally:
        store.close()
