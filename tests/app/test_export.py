"""Export: the report's Markdown as Markdown, self-contained HTML, JSON and a PDF that keeps every script."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from pypdf import PdfReader

from sala_report.app.export import default_filename, export_report, to_html
from sala_report.app.export import markdown as report_markdown
from sala_report.app.export.pdf import write_pdf
from sala_report.app.export.pdf_fonts import FontSources, package_font_folders

LONG_URL = (
    "https://www.example.org/reports/2024/heat-pumps/cold-climate/field-trials/appendix-b/raw-data/"
    "measurements-by-site-and-month.csv"
)
ARABIC_WORDS = ["المضخات", "الحرارية", "تعمل", "بكفاءة"]
REPORT = f"""# Heat pumps in cold climates

## 1. Introduction

Air-source heat pumps keep working well below freezing [1]. **Efficiency** falls as the *lift* grows,
see `COP` figures [2, 3] and the raw data at {LONG_URL} for every site.

### 1.1 Sources in other languages

中文：空气源热泵在寒冷地区的应用越来越广泛 [2]。

日本語：寒冷地向けのヒートポンプは外気温が低くても暖房できます [3]。

한국어: 한랭 지역에서도 히트펌프의 효율이 높아지고 있습니다.

العربية: {" ".join(ARABIC_WORDS)} في المناخ البارد.

Emoji: 🔥 🏠 👍

## 2. Results

| Site | Country | Outdoor °C | COP | Heating kWh | Electricity kWh | Backup used | Installer | Notes |
|---|---|---:|---:|---:|---:|---|---|---|
| Tromsø-1 | Norway | -18 | 2.1 | 12400 | 5905 | no | NordVarme AS | Ground-mounted outdoor unit with a snow shield and hourly defrost logging |
| Harbin-3 | 中国 | -25 | 1.8 | 15100 | 8390 | yes | 哈尔滨热能 | 超低温机型 |

```python
def cop(heat_kwh, electricity_kwh):
    return heat_kwh / electricity_kwh
```

- First point
  - nested point
- Second point [1]

## References

[1] Cold-climate field trial — https://www.example.org/reports/2024/heat-pumps/cold-climate
[2] 空气源热泵技术报告 — https://example.cn/report
[3] 寒冷地ヒートポンプ調査 — /home/user/docs/sapporo-survey.md
"""


def _text(path: Path) -> str:
    return "\n".join(page.extract_text() for page in PdfReader(path).pages)


def _outline_titles(outline) -> list[str]:
    titles = []
    for item in outline:
        titles += _outline_titles(item) if isinstance(item, list) else [item.title]
    return titles


@pytest.fixture(scope="module")
def report_pdf(tmp_path_factory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("pdf") / "report.pdf"
    return out, write_pdf(REPORT, out)


def test_pdf_keeps_every_script_with_packaged_fonts(report_pdf):
    path, result = report_pdf
    assert result.missing_fonts == ()
    text = _text(path)
    for sample in (
        "空气源热泵在寒冷地区",
        "寒冷地向けのヒートポンプ",
        "한랭 지역에서도",
        "🔥",
        "🏠",
        "👍",
        "Tromsø-1",
        "哈尔滨热能",
        "return heat_kwh / electricity_kwh",
        "寒冷地ヒートポンプ調査",
    ):
        assert sample in text, sample
    for word in ARABIC_WORDS:  # right-to-left: readers order the words differently, so check each one
        assert word in text, word
    assert not any(c < " " and c != "\n" for c in text)  # no raw glyph codes (Arabic dots are marks)
    assert LONG_URL in text.replace("\n", "")  # wrapped over lines, nothing lost


def _embedded_fonts(path: Path) -> set[str]:
    """Base names of the fonts the PDF embeds ("NotoSansCJKjp-Regular"), without the subset tag."""
    names: set[str] = set()

    def visit(resources) -> None:
        if resources is None:
            return
        resources = resources.get_object()
        for font in (resources.get("/Font") or {}).values():
            for face in [font.get_object(), *(d.get_object() for d in font.get_object().get("/DescendantFonts") or [])]:
                names.add(str(face.get("/BaseFont")).lstrip("/").split("+")[-1].removesuffix("-Identity-H"))
        for xobject in (resources.get("/XObject") or {}).values():
            visit(xobject.get_object().get("/Resources"))

    for page in PdfReader(path).pages:
        visit(page.get("/Resources"))
    return names


CJK_FACES = {"NotoSansCJKsc-Regular", "NotoSansCJKjp-Regular", "NotoSansCJKkr-Regular"}


@pytest.mark.parametrize(
    "text, face",
    [
        ("日本語：寒冷地向けのヒートポンプは外気温が低くても暖房できます。", "NotoSansCJKjp-Regular"),
        ("한국어: 한랭 지역에서도 히트펌프의 효율이 높아지고 있습니다.", "NotoSansCJKkr-Regular"),
        ("中文：空气源热泵在寒冷地区的应用越来越广泛。", "NotoSansCJKsc-Regular"),
    ],
)
def test_japanese_and_korean_get_their_own_cjk_face(tmp_path, text, face):
    """Shared Han characters are drawn differently per region: Japanese text set in the Chinese face looks
    wrong to a Japanese reader. The face each paragraph used is the one the PDF embeds."""
    out = tmp_path / "cjk.pdf"
    write_pdf(f"# Heat pumps\n\n{text}\n", out)
    assert _embedded_fonts(out) & CJK_FACES == {face}
    assert text in _text(out)


def test_a_report_in_three_cjk_languages_embeds_three_faces(report_pdf):
    path, _ = report_pdf
    assert _embedded_fonts(path) >= CJK_FACES


def test_pdf_headings_are_bookmarks_and_links_are_annotations(report_pdf):
    path, _ = report_pdf
    reader = PdfReader(path)
    assert _outline_titles(reader.outline) == [
        "Heat pumps in cold climates",
        "1. Introduction",
        "1.1 Sources in other languages",
        "2. Results",
        "References",
    ]
    annotations = [a.get_object() for page in reader.pages for a in page.get("/Annots", [])]
    uris = {a["/A"]["/URI"] for a in annotations if "/A" in a and "/URI" in a["/A"]}
    assert {LONG_URL, "https://example.cn/report", "file:///home/user/docs/sapporo-survey.md"} <= uris
    internal = [a for a in annotations if "/Dest" in a]  # citations jump to their reference
    assert len(internal) >= 5


def test_pdf_without_fonts_says_which_are_missing_and_still_writes(tmp_path):
    latin_only = tmp_path / "fonts"
    latin_only.mkdir()
    noto_sans = next(f for folder in package_font_folders() for f in folder.glob("NotoSans[[]*.ttf"))
    shutil.copy(noto_sans, latin_only)
    result = write_pdf(REPORT, tmp_path / "r.pdf", sources=FontSources(packages=False, folders=(latin_only,)))
    messages = " ".join(result.warnings)
    assert (tmp_path / "r.pdf").stat().st_size > 1000
    assert "Noto Sans CJK" in messages and "pip install 'sala-report[cjk]'" in messages
    assert "Almarai" in messages and "Noto Emoji" in messages
    assert "Tromsø-1" in _text(tmp_path / "r.pdf")


def test_pdf_with_no_unicode_font_falls_back_to_core_fonts(tmp_path):
    result = write_pdf(
        "# Plain\n\nText with 中文.\n", tmp_path / "r.pdf", sources=FontSources(packages=False, folders=())
    )
    assert "Noto Sans" in result.warnings[0] and "fontpkg-noto-sans" in result.warnings[0]
    assert "Text with" in _text(tmp_path / "r.pdf")


def test_html_is_self_contained_and_links_citations(tmp_path):
    page = to_html(REPORT + "\n![chart](https://example.org/chart.png)\n\n<script>alert(1)</script>\n")
    assert "<style>" in page and "<link" not in page and "@import" not in page
    assert not re.search(r"\bsrc=|url\(", page)  # nothing is fetched when the file is opened
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert '<a href="https://example.org/chart.png" class="image-link">[image: chart]</a>' in page
    for n in (1, 2, 3):
        assert f'href="#ref-{n}"' in page and f'id="ref-{n}"' in page
    assert f'<a href="{LONG_URL}">' in page
    assert 'dir="auto"' in page
    assert "<title>Heat pumps in cold climates</title>" in page


def test_export_writes_markdown_html_and_json(tmp_path):
    md = export_report("# T\n\nBody", "md", tmp_path / "a" / "r.md")
    assert md.path.read_text(encoding="utf-8") == "# T\n\nBody\n"
    assert (
        export_report(REPORT, "html", tmp_path / "r.html")
        .path.read_text(encoding="utf-8")
        .startswith("<!doctype html>")
    )
    data = json.loads(export_report(REPORT, "json", tmp_path / "r.json", summary={"session_id": 7}).path.read_text())
    assert data["session_id"] == 7 and data["markdown"] == REPORT
    assert not list(tmp_path.rglob("*.part"))
    with pytest.raises(ValueError, match="format must be one of md, html, pdf, json, docx, bib, ris, got 'odt'"):
        export_report(REPORT, "odt", tmp_path / "r.odt")


def test_references_split_into_anchored_entries_and_only_real_citations_link():
    tokens = report_markdown.parse(
        "# T\n\nSee [1] and [9].\n\n## References\n\n[1] A — https://a.example\n[2] B — /tmp/b.md\n"
    )
    anchors = [t.attrGet("id") for t in tokens if t.type == "paragraph_open"]
    assert anchors == [None, "ref-1", "ref-2"]
    body = tokens[4]  # the first paragraph's inline token
    links = [c.attrGet("href") for c in body.children if c.type == "link_open"]
    assert links == ["#ref-1"]  # [9] names no reference, so it stays text
    assert [h.text for h in report_markdown.headings(tokens)] == ["T", "References"]


def test_default_filename_is_readable_and_safe():
    assert default_filename("Heat pumps: cold/climates?", 12, "pdf") == "report-12-heat-pumps-cold-climates.pdf"
    assert default_filename("中文 报告", 3, "md") == "report-3-中文-报告.md"
    assert default_filename(None, 3, "html") == "report-3.html"


def test_export_command_writes_a_stored_session(tmp_path, capsys):
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent / "warp"))
    from warp_fakes import ScriptedGenerator, make_store, settings

    from sala_report.app.cli import main
    from sala_report.app.warp import Engine

    data = tmp_path / "data"
    store, retriever, ids = make_store(data / "sala.db")
    result = Engine.start(
        store, ScriptedGenerator(), retriever, settings(), "How did renewable energy grow?", docs_source_ids=ids
    ).run()
    store.close()

    assert (
        main(["--data-dir", str(data), "export", result.session_id[:4], "--out", str(tmp_path / "r.html"), "--json"])
        == 0
    )
    written = json.loads(capsys.readouterr().out)
    assert written == {"path": str(tmp_path / "r.html"), "format": "html", "warnings": []}
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert "<h2" in page and 'id="ref-1"' in page

    assert main(["--data-dir", str(data), "export", result.session_id, "--format", "json"]) == 0
    path = Path(capsys.readouterr().out.strip())
    assert path.parent == data / "reports" and path.name.startswith(f"report-{result.session_id}-")
    summary = json.loads(path.read_text(encoding="utf-8"))
    assert summary["session_id"] == result.session_id and summary["markdown"].startswith("# ")

    assert main(["--data-dir", str(data), "export", "nosuchid"]) == 2
    assert "sala-report sessions" in capsys.readouterr().err
