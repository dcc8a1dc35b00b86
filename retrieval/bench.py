"""Benchmark: folder ingest rate, store write rate, and FTS passage latency at 100,000 chunks.

    python -m sala_report.retrieval.bench [--docs 2000] [--chunks 100000] [--queries 300]

Text is synthetic, with Zipf-distributed words so that common terms match most chunks, as in real
text; that is the case that makes BM25 ranking slow. Checks its own answers before timing them.
"""

from __future__ import annotations

import argparse
import itertools
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from sala_report.retrieval.chunk import split_text
from sala_report.retrieval.documents import ingest_folder
from sala_report.retrieval.store import SourceRecord, Store

SYLLABLES = [
    "ka",
    "lo",
    "mi",
    "nu",
    "re",
    "sa",
    "ti",
    "vo",
    "ze",
    "pa",
    "ri",
    "do",
    "fu",
    "ga",
    "he",
    "ji",
    "ku",
    "le",
    "mo",
    "na",
]
FILLER = ["the", "of", "and", "to", "in", "is", "that", "for", "with", "as", "on", "by"]
CJK_WORDS = [
    "机器",
    "学习",
    "数据",
    "模型",
    "城市",
    "河流",
    "能源",
    "气候",
    "政策",
    "市场",
    "森林",
    "海洋",
    "研究",
    "分析",
    "方法",
    "结果",
]


def vocabulary(size: int, rng: random.Random) -> list[str]:
    words: set[str] = set()
    while len(words) < size:
        words.add("".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4))))
    return sorted(words)


class TextMaker:
    def __init__(self, seed: int = 0, vocab_size: int = 20000):
        self.rng = random.Random(seed)
        self.words = vocabulary(vocab_size, self.rng)
        # cumulative weights once: random.choices would otherwise rebuild them on every call
        self.cum_weights = list(itertools.accumulate(1.0 / (rank + 1) for rank in range(len(self.words))))

    def sentence(self, n: int = 14) -> str:
        picked = self.rng.choices(self.words, cum_weights=self.cum_weights, k=n)
        for i in range(0, n, 4):
            picked.insert(i, self.rng.choice(FILLER))
        return " ".join(picked).capitalize() + "."

    def passage(self, tokens: int) -> str:
        return " ".join(self.sentence() for _ in range(max(1, tokens // 18)))

    def cjk_passage(self) -> str:
        return "".join(self.rng.choice(CJK_WORDS) for _ in range(60)) + "。"

    def query(self) -> str:
        shape = self.rng.random()
        if shape < 0.3:
            return " ".join(self.rng.choices(self.words, cum_weights=self.cum_weights, k=2))
        if shape < 0.7:
            return " ".join(self.rng.choices(self.words[:2000], k=5))
        words = self.rng.choices(self.words, cum_weights=self.cum_weights, k=8)
        return "how does the " + " ".join(words[:4]) + " affect " + " ".join(words[4:]) + "?"


def bench_ingest(docs: int, maker: TextMaker, workdir: Path) -> None:
    folder = workdir / "docs"
    folder.mkdir()
    for i in range(docs):
        body = "\n\n".join(maker.passage(120) for _ in range(4))
        (folder / f"doc{i:05d}.md").write_text(f"# Document {i}\n\n{body}\n", encoding="utf-8")
    split_text("Warm up. The splitter's first use imports llama-index.")
    store = Store.open(workdir / "ingest.db")
    start = time.perf_counter()
    report = ingest_folder(store, folder)
    elapsed = time.perf_counter() - start
    chunks = store.db["chunks"].count
    assert report.added == docs and report.failed == 0, report
    start = time.perf_counter()
    again = ingest_folder(store, folder)
    unchanged_s = time.perf_counter() - start
    assert again.unchanged == docs
    print(
        f"ingest: {docs} documents ({chunks} chunks) in {elapsed:.2f} s = {docs / elapsed:,.0f} documents/s, "
        f"{chunks / elapsed:,.0f} chunks/s (read, extract, split, store)"
    )
    print(f"re-ingest unchanged: {unchanged_s * 1000:.0f} ms for {docs} documents")
    store.close()


def fill_store(store: Store, target_chunks: int, maker: TextMaker, per_source: int = 10) -> float:
    start = time.perf_counter()
    written = 0
    source = 0
    while written < target_chunks:
        n = min(per_source, target_chunks - written)
        cjk = source % 20 == 0  # 5% of sources in Chinese, for the bigram index
        chunks = [maker.cjk_passage() if cjk else maker.passage(200) for _ in range(n)]
        store.put_source(
            SourceRecord(
                f"https://bench.example/{source}", "web", f"Page {source}", "\n\n".join(chunks), f"hash{source}", chunks
            )
        )
        written += n
        source += 1
    return time.perf_counter() - start


def bench_queries(store: Store, maker: TextMaker, count: int) -> dict[str, list[float]]:
    queries = [maker.query() for _ in range(count)]
    cjk_queries = ["机器学习", "城市 河流", "气候政策研究", "数据分析方法", "能源"] * max(1, count // 50)
    some_sources = set(random.Random(1).sample(range(1, store.db["sources"].count + 1), 50))
    store.passages("warm up the page cache", 10)
    timings: dict[str, list[float]] = {"free text": [], "free text, 50 sources": [], "CJK": []}
    runs = (
        ("free text", queries, None),
        ("free text, 50 sources", queries[: count // 2], some_sources),
        ("CJK", cjk_queries, None),
    )
    for name, batch, ids in runs:
        for query in batch:
            start = time.perf_counter()
            passages = store.passages(query, 10, source_ids=ids)
            timings[name].append((time.perf_counter() - start) * 1000)
            assert len(passages) <= 10
            assert ids is None or all(p.source_id in ids for p in passages)
    assert store.passages("机器学习", 5), "the CJK index found nothing"
    return timings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=2000, help="documents for the folder ingest rate")
    parser.add_argument("--chunks", type=int, default=100_000, help="chunks in the store for query latency")
    parser.add_argument("--queries", type=int, default=300)
    args = parser.parse_args(argv)
    maker = TextMaker()
    with tempfile.TemporaryDirectory(prefix="sala-bench-") as tmp:
        workdir = Path(tmp)
        bench_ingest(args.docs, maker, workdir)
        store = Store.open(workdir / "bench.db")
        seconds = fill_store(store, args.chunks, maker)
        print(
            f"store writes: {args.chunks:,} chunks in {seconds:.1f} s = {args.chunks / seconds:,.0f} chunks/s "
            f"(FTS5 + CJK bigram indexes, one transaction per source)"
        )
        size_mb = (workdir / "bench.db").stat().st_size / 1e6
        print(f"store: {store.db['sources'].count:,} sources, {store.db['chunks'].count:,} chunks, {size_mb:.0f} MB")
        worst = 0.0
        for name, ms in bench_queries(store, maker, args.queries).items():
            ms.sort()
            p95 = ms[int(0.95 * (len(ms) - 1))]
            worst = max(worst, p95)
            print(
                f"passages(k=10), {name}: {len(ms)} queries, median {statistics.median(ms):.1f} ms, "
                f"p95 {p95:.1f} ms, max {ms[-1]:.1f} ms"
            )
        store.close()
    print("query latency target (p95 < 50 ms):", "met" if worst < 50 else "NOT met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
