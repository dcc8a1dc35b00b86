"""The report's references as a bibliography a reference manager imports: BibTeX and RIS.

Web pages become `@online` / `ELEC`; papers (an arXiv id or a DOI found in what the search engine
reported, the page's metadata or its URL) become articles or preprints carrying that identifier; the
person's own files become `@misc` / `GEN`. Entries keep the report's numbers, so `[3]` is `ref3-...`.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from sala_report.app.export import markdown as report_markdown

_REFERENCE = re.compile(r"^\s*\[(\d{1,4})\]\s+(.*?)\s+[—–-]\s+(\S.*?)\s*$")
_ARXIV_URL = re.compile(
    r"arxiv\.org/(?:abs|pdf|html)/((?:\d{4}\.\d{4,5})|(?:[a-z][a-z.-]*/\d{7}))(?:v\d+)?(?:\.pdf)?", re.IGNORECASE
)
_DOI_IN_URL = re.compile(r"(?:doi\.org/|/doi/(?:abs/|full/|pdf/|epdf/)?)(10\.\d{4,9}/[^\s?#&]+)", re.IGNORECASE)
_DOI = re.compile(r"^10\.\d{4,9}/\S+$")
_MARKDOWN_ESCAPE = re.compile(r"\\([!-/:-@\[-`{-~])")


@dataclass(frozen=True)
class Reference:
    """One entry of the report's References list, with what the store knows of its source."""

    number: int
    title: str
    location: str  # URL or file path
    kind: str = "web"  # web or file
    metadata: dict[str, Any] = field(default_factory=dict)
    fetched_at: str = ""  # ISO 8601; the access date of a web page


def references_in(markdown: str, lookup: Callable[[str], Any] | None = None) -> list[Reference]:
    """The numbered entries under the report's References heading. `lookup(location)` returns the stored
    Source for a location (or None), which adds its kind, metadata and fetch date."""
    body = _references_section(markdown)
    found = []
    for line in body.splitlines():
        match = _REFERENCE.match(line)
        if not match:
            continue
        number, location = int(match.group(1)), match.group(3).strip()
        title = _MARKDOWN_ESCAPE.sub(r"\1", match.group(2).strip())  # the report escapes * _ [ ] in titles
        source = lookup(location) if lookup is not None else None
        kind = getattr(source, "kind", None) or ("web" if "://" in location else "file")
        found.append(
            Reference(
                number,
                title,
                location,
                kind,
                dict(getattr(source, "metadata", None) or {}),
                getattr(source, "fetched_at", "") or "",
            )
        )
    return found


def _references_section(markdown: str) -> str:
    lines, inside, level = markdown.splitlines(), False, 0
    kept = []
    for line in lines:
        heading = re.match(r"^(#{1,6})\s+(.*?)\s*#*\s*$", line)
        if heading:
            depth, text = len(heading.group(1)), heading.group(2).strip().lower().rstrip(":")
            if text in report_markdown.REFERENCE_HEADINGS:
                inside, level = True, depth
                continue
            if inside and depth <= level:
                inside = False
        if inside:
            kept.append(line)
    return "\n".join(kept)


@dataclass(frozen=True)
class Work:
    """What a bibliography entry says about one reference."""

    kind: str  # "paper", "web" or "file"
    title: str
    url: str
    authors: tuple[str, ...]
    year: str
    date: str  # YYYY-MM-DD, YYYY-MM or YYYY when known
    doi: str
    arxiv_id: str
    journal: str
    site: str
    accessed: str  # YYYY-MM-DD


def describe(ref: Reference) -> Work:
    meta = ref.metadata
    work = meta.get("work") if isinstance(meta.get("work"), dict) else {}
    urls = [ref.location, str(meta.get("final_url") or ""), str(meta.get("canonical_url") or "")]
    arxiv_id = str(work.get("arxiv_id") or "") or next((m.group(1) for u in urls if (m := _ARXIV_URL.search(u))), "")
    doi = _clean_doi(str(work.get("doi") or meta.get("doi") or ""))
    if not doi:
        doi = next((_clean_doi(m.group(1)) for u in urls if (m := _DOI_IN_URL.search(u))), "")
    authors = [str(a) for a in work.get("authors") or [] if str(a).strip()]
    if not authors and meta.get("author"):  # trafilatura joins several authors with "; "
        authors = [a.strip() for a in str(meta["author"]).split(";") if a.strip()]
    date = str(work.get("date") or meta.get("date") or "")[:10]
    if not re.match(r"^\d{4}(-\d{2}){0,2}$", date):
        date = ""
    if ref.kind == "file":
        kind = "file"
    elif arxiv_id or doi or work.get("type") == "paper":
        kind = "paper"
    else:
        kind = "web"
    url = ref.location if ref.kind != "file" else ""
    return Work(
        kind,
        ref.title,
        url,
        tuple(authors),
        date[:4],
        date,
        doi,
        arxiv_id,
        str(work.get("journal") or ""),
        str(meta.get("sitename") or ""),
        (ref.fetched_at or "")[:10],
    )


def _clean_doi(text: str) -> str:
    text = text.strip().rstrip(".,;)")
    for prefix in ("https://doi.org/", "http://doi.org/", "https://dx.doi.org/", "doi:"):
        if text.lower().startswith(prefix):
            text = text[len(prefix) :]
    return text if _DOI.match(text) else ""


def to_bibtex(references: Iterable[Reference]) -> str:
    entries = []
    for ref in references:
        work = describe(ref)
        fields: list[tuple[str, str]] = [("title", "{" + _tex(work.title) + "}")]
        if work.authors:
            fields.append(("author", " and ".join(_bib_name(a) for a in work.authors)))
        if work.kind == "paper":
            entry_type = "article" if work.journal else "misc"
            if work.journal:
                fields.append(("journal", _tex(work.journal)))
        elif work.kind == "web":
            entry_type = "online"
            if work.site:
                fields.append(("organization", _tex(work.site)))
        else:
            entry_type = "misc"
            fields += [("howpublished", _tex(ref.location)), ("note", "Local document")]
        if work.year:
            fields.append(("year", work.year))
        if len(work.date) == 10:
            fields.append(("date", work.date))
        if work.doi:
            fields.append(("doi", _bib_url(work.doi)))
        if work.arxiv_id:
            fields += [("eprint", work.arxiv_id), ("archiveprefix", "arXiv"), ("eprinttype", "arxiv")]
        if work.url:
            fields.append(("url", _bib_url(work.url)))
        if work.accessed and work.kind != "file":
            fields.append(("urldate", work.accessed))
        body = ",\n".join(f"  {name} = {{{value}}}" for name, value in fields)
        entries.append(f"@{entry_type}{{{_key(ref, work)},\n{body}\n}}\n")
    return "\n".join(entries)


def to_ris(references: Iterable[Reference]) -> str:
    records = []
    for ref in references:
        work = describe(ref)
        if work.kind == "paper":
            kind = "JOUR" if work.journal else "UNPB"  # an arXiv preprint is not yet published
        else:
            kind = "ELEC" if work.kind == "web" else "GEN"
        lines = [("TY", kind), ("ID", f"ref{ref.number}"), ("TI", work.title)]
        lines += [("AU", a) for a in work.authors]
        if work.year:
            lines.append(("PY", work.year))
        if work.date:
            lines.append(("DA", work.date.replace("-", "/")))
        if work.journal:
            lines.append(("JO", work.journal))
        if work.site:
            lines.append(("PB", work.site))
        if work.doi:
            lines.append(("DO", work.doi))
        if work.arxiv_id:
            lines.append(("N1", f"arXiv:{work.arxiv_id}"))
        if work.url:
            lines.append(("UR", work.url))
        if work.accessed and work.kind != "file":
            lines.append(("Y2", work.accessed.replace("-", "/")))
        if work.kind == "file":
            lines.append(("N1", f"Local document: {ref.location}"))
        text = "".join(f"{tag}  - {' '.join(value.split())}\n" for tag, value in lines if value.strip())
        records.append(text + "ER  - \n")
    return "\n".join(records)


def _key(ref: Reference, work: Work) -> str:
    """`ref<n>-<first author's surname or first title word><year>`: the report's number keeps keys unique."""
    word = work.authors[0].split()[-1] if work.authors else (work.title.split() or ["source"])[0]
    ascii_word = unicodedata.normalize("NFKD", word).encode("ascii", "ignore").decode("ascii")
    word = re.sub(r"[^A-Za-z0-9]", "", ascii_word).lower()[:20]
    return f"ref{ref.number}" + (f"-{word}" if word else "") + work.year


_TEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "{": r"\{",
    "}": r"\}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def _tex(text: str) -> str:
    return "".join(_TEX_SPECIAL.get(c, c) for c in " ".join(text.split()))


def _bib_name(name: str) -> str:
    name = _tex(name)
    return "{" + name + "}" if " and " in name.lower() else name


def _bib_url(url: str) -> str:
    """URLs stay verbatim except braces and spaces, which would break the field (percent-encoded instead)."""
    return url.replace("{", "%7B").replace("}", "%7D").replace(" ", "%20").replace("\\", "%5C")
