"""`python -m sala_report.model.bench --quantize gguf`: with --cpu a perplexity row for SmolLM2 kept in its own
GGUF blocks (the same values as the fp32 load, so the same perplexity); with --gpu, whose weights are random and
from no GGUF file, one message saying so and where GGUF blocks are timed instead."""

from __future__ import annotations

import re

import pytest

from sala_report.model import bench


@pytest.mark.slow
def test_cpu_perplexity_has_a_gguf_native_row(tmp_path, monkeypatch, capsys):
    text = tmp_path / "perplexity.txt"
    text.write_text(bench.PERPLEXITY_TEXT.read_text(encoding="utf-8")[:300], encoding="utf-8")
    monkeypatch.setattr(bench, "PERPLEXITY_TEXT", text)  # a shorter text: two loads and evaluations stay quick
    assert bench.main(["--cpu", "--quantize", "gguf"]) == 0
    rows = {
        m["label"]: (float(m["ppl"]), m["vs"])
        for m in re.finditer(
            r"^\| (?P<label>[^|]+?) \| (?P<ppl>[\d.]+) \| (?P<vs>[^|]+) \|", capsys.readouterr().out, re.M
        )
    }
    # SmolLM2's file is Q4_1 in its linears and Q8_0 in the (tied) embedding: int4 and int8 in groups of 32
    native = rows["GGUF-native (int4 g32 + zero points, int8 g32)"]
    assert list(rows) == ["fp32", "GGUF-native (int4 g32 + zero points, int8 g32)"]
    assert native[0] == pytest.approx(rows["fp32"][0], rel=1e-5) and native[1] in ("+0.00%", "-0.00%")


def test_gpu_with_gguf_is_one_message_saying_why(capsys):
    with pytest.raises(SystemExit) as stop:
        bench.main(["--gpu", "--quantize", "int4,gguf"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "random MiniCPM-SALA weights, which come from no GGUF file" in err and "--cpu --quantize gguf" in err
    assert "Traceback" not in err


def test_an_unknown_format_names_the_ones_taken(capsys):
    with pytest.raises(SystemExit):
        bench.main(["--cpu", "--quantize", "int5"])
    assert "--quantize takes int8, int4, fp8 and (with --cpu) gguf, got int5" in capsys.readouterr().err
