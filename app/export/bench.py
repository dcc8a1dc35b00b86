"""PDF export speed, old engine against new (`python -m sala_report.app.export.bench`): reports of 1 and 10 pages
with Chinese, Japanese, Korean, Arabic and emoji, each export timed in a fresh process (imports included, as
`sala-report export` pays them) and again warm in the same process; each PDF's text is read back to check it.

The old engine (fpdf2 with fontTools subsetting) is loaded from a git revision, since the app no longer has it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

OLD_REV = "b58779a"  # the last commit that exported PDFs with fpdf2
CHECKS = ("空气源热泵", "ヒートポンプ", "히트펌프", "بكفاءة", "🔥", "Tromsø")

_SECTION = """## {n}. Site group {n}

Air-source heat pumps keep working well below freezing [1]. **Efficiency** falls as the *lift* grows, and the
field data for group {n} show a seasonal COP between 2.1 and 3.4 [2, 3]. Defrost cycles took {n}% of the running
time at the coldest sites; see https://www.example.org/reports/2024/heat-pumps/group-{n}/raw-data.csv for the logs.
Installers reported that sizing for the design temperature, not the average, mattered most for comfort.

中文：空气源热泵在寒冷地区的应用越来越广泛，第{n}组的季节性能系数达到二点五以上 [2]。

日本語：寒冷地向けのヒートポンプは外気温が低くても暖房できます。第{n}群の結果を示します [3]。

한국어: 한랭 지역에서도 히트펌프의 효율이 높아지고 있습니다. {n}번 그룹의 결과입니다.

العربية: المضخات الحرارية تعمل بكفاءة في المناخ البارد، والمجموعة {n} تؤكد ذلك.

Emoji: 🔥 🏠 👍 ❄️

| Site | Country | Outdoor °C | COP | Heating kWh | Notes |
|---|---|---:|---:|---:|---|
| Tromsø-{n} | Norway | -18 | 2.1 | 12400 | Ground-mounted outdoor unit with a snow shield |
| Harbin-{n} | 中国 | -25 | 1.8 | 15100 | 超低温机型 |
| Sapporo-{n} | 日本 | -12 | 2.6 | 9800 | 寒冷地仕様 |

```python
def cop(heat_kwh, electricity_kwh):
    return heat_kwh / electricity_kwh  # group {n}
```

- First point of group {n}
  - a nested point
- Second point [1]
"""

_REFERENCES = """## References

[1] Cold-climate field trial — https://www.example.org/reports/2024/heat-pumps/cold-climate
[2] 空气源热泵技术报告 — https://example.cn/report
[3] 寒冷地ヒートポンプ調査 — /home/user/docs/sapporo-survey.md
"""

# Sections per page as the new engine sets them (about 1 page for 2 sections).
_SECTIONS = {1: 1, 10: 20}

_CHILD = """
import json, sys, time
t0 = time.perf_counter()
sys.path.insert(0, sys.argv[3]) if len(sys.argv) > 3 else None
from pathlib import Path
if len(sys.argv) > 3:
    from sala_pdf_old.pdf import write_pdf
else:
    from sala_report.app.export.pdf import write_pdf
markdown = Path(sys.argv[1]).read_text(encoding="utf-8")
result = write_pdf(markdown, Path(sys.argv[2]))
cold = time.perf_counter() - t0
t1 = time.perf_counter()
write_pdf(markdown, Path(sys.argv[2]))
warm = time.perf_counter() - t1
print(json.dumps({"cold": cold, "warm": warm, "pages": result.pages, "warnings": len(result.missing_fonts)}))
"""


def sample_report(pages: int) -> str:
    """A report of about `pages` A4 pages in every script the exporters must keep."""
    sections = _SECTIONS.get(pages, max(1, round(pages * 1.4)))
    body = "\n".join(_SECTION.format(n=n + 1) for n in range(sections))
    return f"# Heat pumps in cold climates\n\n{body}\n{_REFERENCES}"


def _old_engine(rev: str, folder: Path) -> str | None:
    """Write the old engine's modules at `rev` as package `sala_pdf_old` under `folder`; None when it cannot run."""
    try:
        import fpdf  # noqa: F401  (the old engine needs it)
    except ImportError:
        return "fpdf2 not installed"
    package = folder / "sala_pdf_old"
    package.mkdir()
    (package / "__init__.py").write_text("")
    for name in ("pdf.py", "pdf_fonts.py"):
        shown = subprocess.run(
            ["git", "show", f"{rev}:app/{name}"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).resolve().parents[2],
        )
        if shown.returncode != 0:
            return f"git show {rev}:app/{name} failed"
        source = shown.stdout.replace(
            "from sala_report.app import pdf_fonts, report_markdown",
            "from sala_report.app.export import markdown as report_markdown\nfrom sala_pdf_old import pdf_fonts",
        )
        (package / name).write_text(source.replace("sala_report.app.pdf_fonts", "sala_pdf_old.pdf_fonts"))
    return None


def _run(markdown: Path, out: Path, old: Path | None) -> dict:
    args = [sys.executable, "-c", _CHILD, str(markdown), str(out)] + ([str(old)] if old else [])
    done = subprocess.run(args, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _text_ok(path: Path) -> bool:
    from pypdf import PdfReader

    text = "\n".join(page.extract_text() for page in PdfReader(path).pages)
    return all(c in text for c in CHECKS)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes per row (the median is shown)")
    parser.add_argument("--old-rev", default=OLD_REV, help="git revision of the old fpdf2 engine")
    parser.add_argument("--no-old", action="store_true", help="time the new engine only")
    parser.add_argument("--pages", default="1,10")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="sala-pdf-bench-") as tmp:
        folder = Path(tmp)
        old_problem = "skipped" if args.no_old else _old_engine(args.old_rev, folder)
        for pages in (int(p) for p in args.pages.split(",")):
            markdown = folder / f"report-{pages}.md"
            markdown.write_text(sample_report(pages), encoding="utf-8")
            for engine in ("old (fpdf2)", "new (typst)"):
                old = engine.startswith("old")
                if old and old_problem:
                    rows.append((pages, engine, None, None, None, None, old_problem))
                    continue
                out = folder / f"{engine[:3]}-{pages}.pdf"
                runs = [_run(markdown, out, folder if old else None) for _ in range(args.repeats)]
                cold = statistics.median(r["cold"] for r in runs)
                warm = statistics.median(r["warm"] for r in runs)
                text = "yes" if _text_ok(out) else "NO"
                rows.append(
                    (pages, engine, runs[0]["pages"], cold, warm, out.stat().st_size // 1024, f"text kept: {text}")
                )
    print(f"{'target':>6} | {'engine':<12} | {'pages':>5} | {'cold s':>7} | {'warm s':>7} | {'KiB':>5} | check")
    print("-" * 72)
    for target, engine, got, cold, warm, kib, note in rows:
        cells = (
            (f"{got:>5}", f"{cold:7.2f}", f"{warm:7.2f}", f"{kib:>5}")
            if cold is not None
            else (f"{'-':>5}", f"{'-':>7}", f"{'-':>7}", f"{'-':>5}")
        )
        print(f"{target:>6} | {engine:<12} | " + " | ".join(cells) + f" | {note}")
    print(
        f"cold: a fresh process, imports and font scan included (median of {args.repeats}); warm: the same export again"
    )


if __name__ == "__main__":
    main()
