"""DOCX, ODT, EPUB and reStructuredText files, built here from their specifications' minimal structure, are
read into text with their headings; a package that unpacks past the cap is refused, not unpacked."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from sala_report.retrieval import Store, ingest_folder
from sala_report.retrieval.errors import ExtractionError
from sala_report.retrieval.extract import extract

W = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"


def _zip(path: Path, members: dict[str, str | bytes], *, stored_first: str | None = None) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        if stored_first:  # EPUB and ODT put an uncompressed mimetype first
            z.writestr(zipfile.ZipInfo("mimetype"), stored_first, compress_type=zipfile.ZIP_STORED)
        for name, data in members.items():
            z.writestr(name, data)
    return path


def make_docx(path: Path) -> Path:
    document = f"""<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<w:document xmlns:w="{W}"><w:body>
<w:p><w:pPr><w:pStyle w:val="Heading1"/></w:pPr><w:r><w:t>Tidal mills</w:t></w:r></w:p>
<w:p><w:r><w:t xml:space="preserve">Tide mills ground grain </w:t></w:r><w:r><w:t>on the ebb.</w:t></w:r></w:p>
<w:tbl><w:tr><w:tc><w:p><w:r><w:t>Site</w:t></w:r></w:p></w:tc><w:tc><w:p><w:r><w:t>Built</w:t></w:r></w:p></w:tc></w:tr>
<w:tr><w:tc><w:p><w:r><w:t>Eling</w:t></w:r></w:p></w:tc><w:tc><w:p><w:r><w:t>1418</w:t></w:r></w:p></w:tc></w:tr></w:tbl>
</w:body></w:document>"""
    core = """<?xml version="1.0" encoding="UTF-8"?>
<cp:coreProperties xmlns:cp="http://schemas.openxmlformats.org/package/2006/metadata/core-properties"
 xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:title>Mills of the coast</dc:title></cp:coreProperties>"""
    return _zip(path, {"[Content_Types].xml": "<Types/>", "word/document.xml": document, "docProps/core.xml": core})


def make_odt(path: Path) -> Path:
    content = """<?xml version="1.0" encoding="UTF-8"?>
<office:document-content xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0"
 xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0"><office:body><office:text>
<text:h text:outline-level="2">Salt marshes</text:h>
<text:p>Samphire<text:s text:c="2"/>grows <text:span>below</text:span> the tide line.</text:p>
<text:list><text:list-item><text:p>Sea lavender</text:p></text:list-item></text:list>
</office:text></office:body></office:document-content>"""
    meta = """<?xml version="1.0" encoding="UTF-8"?>
<office:document-meta xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0"
 xmlns:dc="http://purl.org/dc/elements/1.1/"><office:meta><dc:title>Marsh plants</dc:title></office:meta>
</office:document-meta>"""
    return _zip(
        path, {"content.xml": content, "meta.xml": meta}, stored_first="application/vnd.oasis.opendocument.text"
    )


def make_epub(path: Path) -> Path:
    container = """<?xml version="1.0"?>
<container version="1.0" xmlns="urn:oasis:names:tc:opendocument:xmlns:container">
<rootfiles><rootfile full-path="OEBPS/content.opf" media-type="application/oebps-package+xml"/></rootfiles></container>"""
    opf = """<?xml version="1.0" encoding="UTF-8"?>
<package xmlns="http://www.idpf.org/2007/opf" version="3.0"><metadata xmlns:dc="http://purl.org/dc/elements/1.1/">
<dc:title>Notes on Owls</dc:title></metadata>
<manifest><item id="c2" href="text/ch%202.xhtml" media-type="application/xhtml+xml"/>
<item id="c1" href="text/ch1.xhtml" media-type="application/xhtml+xml"/>
<item id="css" href="style.css" media-type="text/css"/></manifest>
<spine><itemref idref="c1"/><itemref idref="c2"/></spine></package>"""
    chapter = """<?xml version="1.0" encoding="UTF-8"?><html xmlns="http://www.w3.org/1999/xhtml"><head><title>x</title>
<style>p {{ color: red }}</style></head><body><h1>{title}</h1><p>{body}</p></body></html>"""
    return _zip(
        path,
        {
            "META-INF/container.xml": container,
            "OEBPS/content.opf": opf,
            "OEBPS/style.css": "p {}",
            "OEBPS/text/ch1.xhtml": chapter.format(title="Barn owls", body="Barn owls hunt by ear."),
            "OEBPS/text/ch 2.xhtml": chapter.format(title="Tawny owls", body="Tawny owls call at dusk."),
        },
        stored_first="application/epub+zip",
    )


def test_docx_text_headings_tables_and_title(tmp_path):
    result = extract(make_docx(tmp_path / "a.docx").read_bytes(), "docx")
    assert result.title == "Mills of the coast"
    assert result.text == "# Tidal mills\n\nTide mills ground grain on the ebb.\n\nSite | Built\n\nEling | 1418"


def test_odt_text_headings_spaces_and_lists(tmp_path):
    result = extract(make_odt(tmp_path / "a.odt").read_bytes(), "odt")
    assert result.title == "Marsh plants"
    assert result.text == "## Salt marshes\n\nSamphire  grows below the tide line.\n\nSea lavender"


def test_epub_chapters_in_spine_order(tmp_path):
    result = extract(make_epub(tmp_path / "a.epub").read_bytes(), "epub")
    assert result.title == "Notes on Owls"
    assert result.text == "# Barn owls\n\nBarn owls hunt by ear.\n\n# Tawny owls\n\nTawny owls call at dusk."


def test_folder_reads_every_format(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    make_docx(docs / "mills.docx")
    make_odt(docs / "marsh.odt")
    make_epub(docs / "owls.epub")
    (docs / "guide.rst").write_text("Guide\n=====\n\nKestrels hover over verges.\n", encoding="utf-8")
    store = Store.open(":memory:")
    report = ingest_folder(store, docs)
    assert (report.added, report.failed, report.skipped) == (4, 0, [])
    found = {q: store.passages(q, 1)[0].title for q in ("eling 1418", "samphire", "tawny dusk", "kestrels verges")}
    assert found == {
        "eling 1418": "Mills of the coast",
        "samphire": "Marsh plants",
        "tawny dusk": "Notes on Owls",
        "kestrels verges": "Guide",
    }


def test_zip_bomb_stops_at_the_unpack_cap(tmp_path):
    bomb = tmp_path / "bomb.docx"
    filler = "<w:p><w:r><w:t>a</w:t></w:r></w:p>" * 200_000  # ~6.8 MB of XML, ~30 KB compressed
    _zip(bomb, {"word/document.xml": f'<w:document xmlns:w="{W}"><w:body>{filler}</w:body></w:document>'})
    assert bomb.stat().st_size < 100_000
    with pytest.raises(ExtractionError, match="unpacks to more than 1,000,000 bytes"):
        extract(bomb.read_bytes(), "docx", max_unpacked_bytes=1_000_000)


@pytest.mark.parametrize("kind", ["docx", "odt", "epub"])
def test_damaged_packages_are_reported_not_raised(kind):
    with pytest.raises(ExtractionError, match=f"not a readable {kind.upper()}"):
        extract(b"PK\x03\x04 not really a zip", kind)


def test_xml_entities_are_not_expanded(tmp_path):
    laughs = (
        '<?xml version="1.0"?><!DOCTYPE d [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]>'
        f'<w:document xmlns:w="{W}"><w:body><w:p><w:r><w:t>&b;&b; fine</w:t></w:r></w:p></w:body></w:document>'
    )
    path = _zip(tmp_path / "laughs.docx", {"word/document.xml": laughs})
    text = extract(path.read_bytes(), "docx").text
    assert "aaaa" not in text and text.endswith("fine")
