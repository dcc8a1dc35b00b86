"""Benchmark: tokens/s of an evidence-mode WRITE with forced tokens fed in one chunk, the same WRITE
sampled token by token, and free generation of the same prompt, on the embedded default model.

    python -m sala_report.app.warp.evidence_bench [--repeat 3] [--threads N]

Prints one table (medians over the repeats). The two evidence-mode runs decode greedily and must give
the same answer; the benchmark stops with an error if they do not.
"""

from __future__ import annotations

import argparse
import statistics
from importlib.resources import files

from sala_report.app.warp.choice_grammar import sentences_constraint
from sala_report.app.warp.citations import Entry
from sala_report.app.warp.decoding import Decoding
from sala_report.app.warp.evidence import sentence_choices
from sala_report.app.warp.generator import GenRequest, LocalGenerator
from sala_report.app.warp.grammar import write_constraint
from sala_report.app.warp.prompts import evidence_text, render, system_prompt
from sala_report.app.warp.validate import Limits

QUESTION = "How well do air-source heat pumps work in cold climates, and what lets them keep heating below freezing?"
TOPIC = "Air-source heat pumps below freezing"


def demo_entries(limit: int = 4) -> list[Entry]:
    """Passages of the shipped demo corpus, chunked as ingestion chunks them."""
    from sala_report.retrieval.chunk import split_text

    corpus = files("sala_report.assets") / "demo" / "corpus"
    out: list[Entry] = []
    for doc in sorted(p for p in corpus.iterdir() if p.name.endswith(".md") and p.name.count(".") == 1):
        for chunk in split_text(doc.read_text(encoding="utf-8")):
            out.append(Entry(f"textid{len(out) + 1}", f"c{len(out)}", len(out), doc.name, str(doc), "file", chunk))
    ranked = sentence_choices(out, question=QUESTION, topic=TOPIC, limit=8)
    keys = list(dict.fromkeys(c.key for c in ranked))[:limit]
    return [e for e in out if e.key in keys]


def requests(gen: LocalGenerator) -> dict[str, GenRequest]:
    entries = demo_entries()
    choices = [c.cited for c in sentence_choices(entries, question=QUESTION, topic=TOPIC, limit=8)]
    user = render(
        "compact/write_evidence.jinja",
        question=QUESTION,
        title=TOPIC,
        feedback=None,
        evidence=evidence_text(entries, 1200, locations=False),
    )
    system = system_prompt("compact")
    chosen = sentences_constraint(choices, 4, 4)  # four sentences: the same amount of text every time
    tokens = sum(sorted((gen.count_tokens(c) for c in choices), reverse=True)[:4]) + 40
    free = write_constraint(Limits(thought_chars=1), [e.key for e in entries])
    return {
        "evidence, forced tokens in one chunk": GenRequest(
            system, user, chosen, tokens, 0.0, decoding=Decoding(fast_forward=True)
        ),
        "evidence, token by token": GenRequest(
            system, user, chosen, tokens, 0.0, decoding=Decoding(fast_forward=False)
        ),
        "free WRITE (grammar of generate mode)": GenRequest(system, user, free, tokens, 0.0),
        "free text (no grammar)": GenRequest(system, user, None, tokens, 0.0),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    gen = LocalGenerator.load("smollm2-135m")
    rows, texts = [], {}
    for name, request in requests(gen).items():
        runs = [gen.generate(request) for _ in range(args.repeat)]
        seconds = statistics.median(r.seconds for r in runs)
        tokens = runs[0].completion_tokens
        rows.append((name, runs[0].prompt_tokens, tokens, seconds, tokens / seconds))
        texts[name] = runs[0].text
    forced, stepped = (texts[k] for k in list(texts)[:2])
    if forced != stepped:
        raise SystemExit(f"forced tokens changed the answer:\n{forced!r}\n{stepped!r}")
    print(f"SmolLM2-135M, {torch.get_num_threads()} torch threads, median of {args.repeat}")
    print(f"{'run':<40} {'prompt':>7} {'tokens':>7} {'seconds':>8} {'tokens/s':>9}")
    for name, prompt, tokens, seconds, rate in rows:
        print(f"{name:<40} {prompt:>7} {tokens:>7} {seconds:>8.2f} {rate:>9.1f}")


if __name__ == "__main__":
    main()
