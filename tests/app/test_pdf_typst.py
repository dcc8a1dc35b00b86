"""PDF export through Typst: the report's text is never Typst code, each CJK language gets its own face, and
the fonts are found by family name (read back from the written PDF with pypdf)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pypdf import PdfReader

from sala_report.app.errors import SalaError
from sala_report.app.export.pdf import write_pdf
from sala_report.app.export.pdf_fonts import FontSources, cjk_region, plan_fonts

HOSTILE = r"""# Title with #import "x" and $x^2$

A paragraph that looks like Typst: #read("/etc/passwd") and #set page(width: 1cm) and @ref and <label>,
a "quoted" back\slash \\ two, // not a comment, /* nor this */, `#eval("1+1")` and *star* and ]) } {.

- an item with #pagebreak() in it
- `raw"quote` and = heading sign

| col #1 | "col" 2 |
|---|---|
| ]#[ | \#box |

```python"); #read("/etc/hostname"); ("
print("#not code")
```

[a link](https://example.org/?q="x"&y=1) and [another](#ref-9) to nowhere.
"""


def _text(path: Path) -> str:
    return "\n".join(page.extract_text() for page in PdfReader(path).pages)


def _fonts(path: Path) -> set[str]:
    return {
        str(font.get_object()["/BaseFont"])
        for page in PdfReader(path).pages
        for font in page["/Resources"]["/Font"].values()
    }


def test_report_text_is_never_typst_code(tmp_path):
    result = write_pdf(HOSTILE, tmp_path / "r.pdf")
    text = _text(tmp_path / "r.pdf").replace("\n", " ")
    assert result.pages == 1  # `#pagebreak()` and `#set page(width: 1cm)` did nothing
    for literal in (
        '#import "x"',
        "$x^2$",
        '#read("/etc/passwd")',
        "@ref",
        "<label>",
        '"quoted"',
        r"back\slash",
        "// not a comment",
        "/* nor this */",
        '#eval("1+1")',
        "#pagebreak()",
        "]#[",
        "#box",  # (Markdown reads `\#` as `#`)
        'print("#not code")',
        "= heading sign",
    ):
        assert literal in text, literal
    assert "root:" not in text  # no file was read
    links = [
        a.get_object()["/A"]["/URI"]
        for page in PdfReader(tmp_path / "r.pdf").pages
        for a in page.get("/Annots", [])
        if "/A" in a.get_object()
    ]
    assert "https://example.org/?q=%22x%22&y=1" in links  # markdown-it percent-encodes the quotes


@pytest.mark.parametrize(
    "text, face",
    [
        ("中文：空气源热泵在寒冷地区的应用越来越广泛。", "CJKsc"),
        ("日本語：寒冷地向けのヒートポンプは外気温が低くても暖房できます。", "CJKjp"),
        ("한국어: 한랭 지역에서도 히트펌프의 효율이 높아지고 있습니다.", "CJKkr"),
    ],
)
def test_each_cjk_language_gets_its_own_face(tmp_path, text, face):
    write_pdf(f"# T\n\n{text}\n", tmp_path / "r.pdf")
    cjk = {f for f in _fonts(tmp_path / "r.pdf") if "CJK" in f}
    assert len(cjk) == 1 and face in cjk.pop()
    assert text in _text(tmp_path / "r.pdf")


def test_mixed_report_uses_the_face_of_each_paragraph(tmp_path):
    write_pdf("# T\n\n中文：热泵\n\n日本語：ヒートポンプ\n\n한국어: 히트펌프\n", tmp_path / "r.pdf")
    faces = " ".join(_fonts(tmp_path / "r.pdf"))
    assert all(f in faces for f in ("CJKsc", "CJKjp", "CJKkr"))


def test_cjk_region_follows_the_script():
    assert cjk_region("寒冷地向けのヒートポンプ") == "JP"  # kana, even among Han characters
    assert cjk_region("한랭 지역") == "KR"
    assert cjk_region("空气源热泵") == "SC"
    assert cjk_region("plain text") == "SC"


def test_fonts_are_found_by_family_name_wherever_they_are(tmp_path):
    """A renamed copy of a font file still serves: nothing depends on a package's file or folder names."""
    plan = plan_fonts("Aa")
    renamed = tmp_path / "fonts"
    renamed.mkdir()
    (renamed / "whatever-name.ttf").write_bytes(plan.body[""].path.read_bytes())
    plan = plan_fonts("Aa", FontSources(packages=False, folders=(renamed,)))
    assert plan.body[""].family == "Noto Sans" and plan.missing == []


def test_a_typst_failure_is_one_clear_error(tmp_path, monkeypatch):
    from sala_report.app.export import pdf

    monkeypatch.setattr(pdf, "to_typst", lambda tokens, plan: "#let x = (")  # what a generator bug would give
    with pytest.raises(SalaError, match="PDF could not be laid out"):
        write_pdf("# T\n", tmp_path / "r.pdf")
    assert not (tmp_path / "r.pdf").exists()
