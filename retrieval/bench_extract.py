"""Time to extract large generated HTML pages, with and without the HTML cap, in the killable reader.

    python -m sala_report.retrieval.bench_extract [--sizes 1,7,14] [--limit 90]

Prints one table row per page: bytes, seconds and text length with the default cap, and without a cap
(scripts and styles still dropped), each stopped at --limit seconds.
"""

from __future__ import annotations

import argparse
import random
import time

from sala_report.retrieval.errors import ExtractionTimeout
from sala_report.retrieval.extract import MAX_HTML_CHARS
from sala_report.retrieval.worker import extract_bounded

WORDS = [
    "river",
    "delta",
    "owl",
    "fox",
    "glacier",
    "tidal",
    "energy",
    "market",
    "policy",
    "model",
    "data",
    "city",
    "forest",
    "ocean",
    "climate",
]


def page(megabytes: float, seed: int = 0) -> bytes:
    """An article-like page: nested sections of paragraphs with links, a table, and inline scripts."""
    rng = random.Random(seed)
    parts, size = ["<html><head><title>Bench</title></head><body>"], 0
    while size < megabytes * 1_000_000:
        words = " ".join(rng.choice(WORDS) for _ in range(60))
        piece = (
            "<div>" * 8
            + f"<p>{words} <a href='/x'>more</a></p>"
            + "</div>" * 8
            + "<table><tr>"
            + "<td>cell</td>" * 10
            + "</tr></table>"
            + "<script>var s="
            + "1" * 200
            + ";</script>\n"
        )
        parts.append(piece)
        size += len(piece)
    return ("".join(parts) + "</body></html>").encode()


def timed(body: bytes, max_html_chars: int, limit: float) -> tuple[str, int]:
    start = time.perf_counter()
    try:
        text = extract_bounded(body, "html", timeout_s=limit, max_html_chars=max_html_chars).text
    except ExtractionTimeout:
        return f"> {limit:g}", 0
    return f"{time.perf_counter() - start:.1f}", len(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="1,7,14", help="page sizes in MB, comma-separated")
    parser.add_argument("--limit", type=float, default=90.0, help="seconds before a run is stopped")
    args = parser.parse_args()
    extract_bounded(b"warm up", "text", timeout_s=60)  # start the reader outside the timings
    print(f"| page MB | capped s (cap {MAX_HTML_CHARS:,} chars) | text chars | uncapped s | text chars |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for size in (float(s) for s in args.sizes.split(",")):
        body = page(size)
        capped = timed(body, MAX_HTML_CHARS, args.limit)
        uncapped = timed(body, 10**12, args.limit)
        print(f"| {len(body) / 1e6:.1f} | {capped[0]} | {capped[1]:,} | {uncapped[0]} | {uncapped[1]:,} |", flush=True)


if __name__ == "__main__":
    main()
