"""Exports for the next step from a real session (a SQLite file, the scripted generator): a Word document
read back with python-docx, BibTeX parsed by bibtexparser, RIS parsed by rispy -- one entry per reference,
papers with their arXiv id or DOI, web pages as online entries, the person's files as misc."""

from __future__ import annotations

import hashlib
import json
import re

import bibtexparser
import docx
import pytest
import rispy
from warp_fakes import Policy, ScriptedGenerator, add_sources, answer, check_report, settings, shown_passages

from sala_report.app.commands.export import export_session
from sala_report.app.warp import Engine
from sala_report.retrieval import Retriever, SourceRecord, Store

ARXIV = "https://arxiv.org/abs/2403.01234"
DOI_PAGE = "https://onlinelibrary.wiley.com/doi/full/10.1002/er.7001"
PAPER_BY_SEARCH = "https://www.ncbi.nlm.nih.gov/pmc/articles/PMC11000001"
WEB = "https://www.energy.gov/eere/solar/how-does-solar-work"
FETCHED = "2026-11-30T10:00:00+00:00"

WEB_SOURCES = {
    ARXIV: (
        "Field performance of solar panels in sub-arctic homes",
        "Solar power generation grew in sub-arctic homes: photovoltaic panels produced most in spring.",
        {
            "work": {
                "arxiv_id": "2403.01234",
                "authors": ["Ingrid Solberg", "Kari Nordmann"],
                "date": "2024-03-02",
                "type": "paper",
            }
        },
    ),
    DOI_PAGE: (
        "Battery storage for rooftop solar: a review",
        "Battery storage lets rooftop solar households shift surplus electricity into the evening peak.",
        {"author": "R. Okafor; J. Lin", "date": "2022-01-15", "sitename": "Wiley"},
    ),
    PAPER_BY_SEARCH: (
        "Wind and solar policy & auctions: 50% cheaper",
        "Renewable energy auctions and feed-in tariffs lowered the price of wind and solar power.",
        {
            "work": {
                "doi": "10.1038/s41560-024-01234-5",
                "journal": "Nature Energy",
                "type": "paper",
                "authors": ["Mei Chen"],
                "date": "2024-06-11",
            }
        },
    ),
    WEB: (
        "How does solar work? {Energy_Gov}",
        "Solar power converts sunlight into electricity with photovoltaic panels.",
        {"sitename": "Energy.gov", "date": "2023-08-01"},
    ),
}


class CiteEverything(Policy):
    """Each section cites every passage it was shown, so every stored source reaches the references."""

    def write(self, request):
        sentences = [f"{text.split('.')[0]} \\cite{{{key}}}." for key, text in shown_passages(request).items()]
        return answer("use all", " ".join(sentences) or "Nothing was found for this part.")


FILES = {
    "notes.md": (
        "My notes on wind",
        ["Renewable energy from offshore wind turbines needs storage and policy support, my notes say."],
    )
}


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    folder = tmp_path_factory.mktemp("session")
    store = Store.open(folder / "sala.db")
    ids = add_sources(store, FILES, folder="/home/me/docs")
    for url, (title, text, metadata) in WEB_SOURCES.items():
        record = SourceRecord(url, "web", title, text, hashlib.sha256(text.encode()).hexdigest(), [text], metadata)
        source_id, _ = store.put_source(record)
        ids.add(source_id)
    store.db.execute("UPDATE sources SET fetched_at = ? WHERE kind = 'web'", [FETCHED])
    engine = Engine.start(
        store,
        ScriptedGenerator(policy=CiteEverything()),
        Retriever(store),
        settings(passages_per_search=6),
        "How are solar, storage and wind power changing electricity?",
        docs_source_ids=ids,
    )
    assert engine.run().status == "done"
    markdown = check_report(store, engine.session_id)
    store.close()
    references = dict(re.findall(r"(?m)^\[(\d+)\] .* — (\S+)$", markdown))
    assert set(WEB_SOURCES) | {"/home/me/docs/notes.md"} == set(references.values()), markdown
    return folder, engine.session_id, markdown, {location: int(n) for n, location in references.items()}


def export(session, fmt: str):
    folder, session_id, _, _ = session
    return export_session(folder / "sala.db", folder / "reports", session_id[:8], fmt, None)


def test_bibtex_parses_with_one_entry_per_reference(session):
    _, _, _, numbers = session
    result = export(session, "bib")
    assert result.path.suffix == ".bib" and result.warnings == ()
    library = bibtexparser.parse_string(result.path.read_text(encoding="utf-8"))
    assert library.failed_blocks == []
    entries = {e.key: e for e in library.entries}
    assert len(entries) == len(numbers)
    by_url = {e.fields_dict["url"].value if "url" in e.fields_dict else e["howpublished"]: e for e in entries.values()}
    arxiv = by_url[ARXIV]
    assert arxiv.entry_type == "misc" and arxiv["eprint"] == "2403.01234" and arxiv["archiveprefix"] == "arXiv"
    assert arxiv["author"] == "Ingrid Solberg and Kari Nordmann" and arxiv["year"] == "2024"
    assert arxiv.key.startswith(f"ref{numbers[ARXIV]}-solberg2024")
    web = by_url[WEB]
    assert web.entry_type == "online" and web["organization"] == "Energy.gov" and web["urldate"] == "2026-11-30"
    assert web["title"] == r"{How does solar work? \{Energy\_Gov\}}"  # TeX specials escaped, braces balanced
    doi_page = by_url[DOI_PAGE]  # the DOI read from the publisher's URL; authors from the page's metadata
    assert doi_page.entry_type == "misc" and doi_page["doi"] == "10.1002/er.7001"
    assert doi_page["author"] == "R. Okafor and J. Lin" and doi_page["year"] == "2022"
    paper = by_url[PAPER_BY_SEARCH]  # the DOI the search engine reported
    assert paper.entry_type == "article" and paper["doi"] == "10.1038/s41560-024-01234-5"
    assert paper["journal"] == "Nature Energy" and r"\&" in paper["title"] and r"50\%" in paper["title"]
    notes = by_url["/home/me/docs/notes.md"]
    assert notes.entry_type == "misc" and notes["note"] == "Local document" and "url" not in notes.fields_dict


def test_ris_parses_with_one_record_per_reference(session):
    _, _, _, numbers = session
    records = rispy.loads(export(session, "ris").path.read_text(encoding="utf-8"))
    assert len(records) == len(numbers)
    by_url = {(r.get("urls") or [r.get("notes", [""])[-1]])[0]: r for r in records}
    assert by_url[ARXIV]["type_of_reference"] == "UNPB" and "arXiv:2403.01234" in by_url[ARXIV]["notes"]
    assert by_url[ARXIV]["authors"] == ["Ingrid Solberg", "Kari Nordmann"]
    assert by_url[WEB]["type_of_reference"] == "ELEC" and by_url[WEB]["access_date"] == "2026/11/30"
    assert by_url[PAPER_BY_SEARCH]["type_of_reference"] == "JOUR"
    assert by_url[PAPER_BY_SEARCH]["doi"] == "10.1038/s41560-024-01234-5"
    assert by_url[DOI_PAGE]["doi"] == "10.1002/er.7001"
    assert sorted(r["id"] for r in records) == sorted(f"ref{n}" for n in numbers.values())


def test_docx_has_the_headings_links_and_references(session):
    _, _, markdown, numbers = session
    document = docx.Document(str(export(session, "docx").path))
    paragraphs = document.paragraphs
    headings = [(p.style.name, p.text) for p in paragraphs if p.style.name.startswith(("Heading", "Title"))]
    expected = [line.lstrip("#").strip() for line in markdown.splitlines() if line.startswith("#")]
    assert [text for _, text in headings] == expected
    assert headings[0][0] == "Title" and headings[-1] == ("Heading 1", "References")
    start = next(i for i, p in enumerate(paragraphs) if p.text == "References")
    listed = [p.text for p in paragraphs[start + 1 :] if p.text.strip()]
    assert len(listed) == len(numbers) and all(re.match(rf"\[{n}\] ", t) for n, t in zip(range(1, 99), listed))
    addresses = {h.address for p in paragraphs for h in p.hyperlinks if h.address}
    assert {ARXIV, WEB} <= addresses  # references' URLs open in a browser
    anchors = {h.fragment for p in paragraphs[:start] for h in p.hyperlinks if h.fragment}
    bookmarks = set(re.findall(r'w:bookmarkStart [^>]*w:name="([^"]+)"', document.element.xml))
    assert anchors and anchors <= bookmarks  # every citation jumps to a reference that exists
    assert bookmarks == {f"ref_{n}" for n in numbers.values()}


@pytest.mark.parametrize("fmt", ["bib", "ris", "docx"])
def test_export_suffix_picks_the_format_from_the_cli(session, fmt, tmp_path, capsys):
    from sala_report.app.cli import main

    folder, session_id, _, _ = session
    out = tmp_path / f"refs.{fmt}"
    assert main(["--data-dir", str(folder), "export", session_id, "--out", str(out), "--json"]) == 0
    assert out.exists() and json.loads(capsys.readouterr().out)["format"] == fmt
