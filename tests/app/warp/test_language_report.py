"""`run --language zh` over English documents, end to end through the CLI and a served model: a loopback
server speaking the OpenAI chat-completions protocol as vLLM does (the grammar applied with xgrammar), whose
scripted model writes Chinese only when the prompt asks for it. The report's prose is Chinese by a script
count written here; the stored sources are the English files, untouched, and the references name them."""

from __future__ import annotations

import json
import os
import re
import unicodedata
from pathlib import Path
from types import SimpleNamespace

import pytest
from fake_openai import FakeOpenAI, point_app_at, write_docs
from warp_fakes import ZH_SECTIONS, Policy, kind_of, shown_passages, target_title
from warp_fakes import answer as warp_answer

from sala_report.app.cli import main
from sala_report.retrieval import Store

DOCS = {
    "solar.md": "# Solar power\n\nSolar module prices fell by about ninety percent over a decade.\n\n"
    "Rooftop solar panels let households sell surplus electricity back to the grid.\n",
    "storage.md": "# Battery storage\n\nLithium-ion batteries store surplus solar electricity for the evening peak.\n",
    "policy.md": "# Energy policy\n\nFeed-in tariffs and auctions gave renewable energy projects long-term revenue.\n",
}
QUESTION = "How is renewable energy changing electricity?"
# What the scripted model searches for each Chinese section title: words of the question's language.
KEYWORDS = {
    "太阳能发电": "solar module prices",
    "储能": "batteries",
    "能源政策": "tariffs",
    "成本": "prices",
    "普及": "rooftop",
}


@pytest.fixture
def server(monkeypatch):
    policy = Policy(expands=1)  # one subsection split, so EXTEND's titles are checked too

    def answer(body: dict) -> str:
        request = SimpleNamespace(prompt=body["messages"][1]["content"])
        kind = kind_of(request)
        if kind == "search":  # the prompt asks for keywords in the question's language, not the report's
            keywords = [KEYWORDS.get(target_title(request), target_title(request)), "renewable energy"]
            return warp_answer("find facts", {"name": "search", "keywords": keywords})
        return policy(kind, request)

    with FakeOpenAI(answer, flavour="vllm", context=16384) as fake:
        point_app_at(monkeypatch, fake, expands=1)
        yield fake


@pytest.fixture
def docs(tmp_path) -> Path:
    return write_docs(tmp_path, DOCS)


def cjk_share(text: str) -> float:
    """Of the letters in `text`, the share in Han, Kana or Hangul script, read from the Unicode names."""
    letters = [c for c in text if c.isalpha()]
    scripts = ("CJK UNIFIED IDEOGRAPH", "CJK COMPATIBILITY IDEOGRAPH", "HIRAGANA", "KATAKANA", "HANGUL")
    cjk = [c for c in letters if unicodedata.name(c, "").startswith(scripts)]
    return len(cjk) / len(letters) if letters else 0.0


REFERENCES = re.compile(r"\n## (?:References|参考文献)\n")  # a Chinese report's own words are Chinese


def prose(report: str) -> str:
    """The sections' text: no title or headings, no italic notes, no citation marks, no reference list."""
    body = REFERENCES.split(report)[0]
    lines = [line for line in body.splitlines() if not line.startswith("#") and not re.fullmatch(r"\*.*\*", line)]
    return re.sub(r"\[\d+(?:,\s*\d+)*\]|⚑", "", "\n".join(lines)).strip()


def run(capsys, docs: Path, tmp_path: Path, *extra: str) -> tuple[int, dict, str, str]:
    out_file = tmp_path / "report.md"
    args = ["run", QUESTION, "--headless", "--docs", str(docs), "--no-web", "--json", "--out", str(out_file)]
    code = main([*args, *extra])
    out, err = capsys.readouterr()
    assert code in (0, 3), err
    return code, json.loads(out), out_file.read_text(encoding="utf-8"), err


def test_language_zh_over_english_documents_writes_chinese_prose_and_leaves_the_sources(server, docs, capsys, tmp_path):
    code, summary, report, err = run(capsys, docs, tmp_path, "--language", "zh")
    text = prose(report)
    assert len(text) > 200 and cjk_share(text) > 0.6, text
    assert re.search(r"\[\d+\]", REFERENCES.split(report)[0])  # the Chinese prose cites
    # the progress line counts a Chinese section's words as a word processor does: each character one
    written = [int(n) for n in re.findall(r"wrote section-[\d.]+ \((\d+) words", err)]
    assert len(written) == 5 and min(written) > 40, err
    # the outline the model planned and split is in Chinese too (the validator held it to the report language)
    headings = re.findall(r"(?m)^#{2,3} [\d.]+ (.+)$", report)
    assert [t for t, _ in ZH_SECTIONS] == [h for h in headings if h in dict(ZH_SECTIONS)]
    assert len(headings) == 5 and all(cjk_share(h) == 1.0 for h in headings)
    # the sources are the English files, as written: stored untranslated, listed by their English titles
    store = Store.open_for_reading(Path(os.environ["SALA_REPORT_HOME"]) / "sala.db")
    try:
        stored = {Path(s.location).name: s for s in store.sources()}
    finally:
        store.close()
    assert set(stored) == set(DOCS)
    for name, source in stored.items():
        assert " ".join(source.text.split()) == " ".join(DOCS[name].split()), name
        assert cjk_share(source.text) == 0.0
    references = report.partition("\n## 参考文献\n")[2]
    listed = re.findall(r"(?m)^\[\d+\] (.+) — (.+)$", references)
    assert listed and all(cjk_share(title) == 0.0 for title, _ in listed)
    assert {Path(location).name for _, location in listed} <= set(DOCS)
    assert {title for title, _ in listed} == {"Solar power", "Battery storage", "Energy policy"}
    # every writing prompt asked for Chinese; the evidence reached the model in English
    writes = [
        b["messages"][1]["content"] for b in server.bodies if "Task: write one section" in b["messages"][1]["content"]
    ]
    assert writes and all("Write in Chinese" in w for w in writes)
    english = [" ".join(text.split()) for text in DOCS.values()]
    for prompt in writes:
        passages = [" ".join(p.split()) for p in shown_passages(SimpleNamespace(prompt=prompt)).values()]
        assert passages and all(any(p in doc for doc in english) for p in passages), passages


def test_without_a_language_the_same_model_writes_english(server, docs, capsys, tmp_path):
    code, summary, report, _ = run(capsys, docs, tmp_path)
    assert code == 0 and summary["status"] == "done"
    text = prose(report)
    assert len(text) > 200 and cjk_share(text) == 0.0, text
    assert not any("Chinese" in b["messages"][1]["content"] for b in server.bodies)


def test_a_chinese_report_over_english_sources_is_done(server, docs, capsys, tmp_path):
    """The scripted Chinese sentences share no number and no Latin-script name with their English passages:
    their citations cannot be checked, so they are neither flagged weak (the run is done, exit 0) nor
    counted verified, and the report says how many were not checked."""
    code, summary, report, err = run(capsys, docs, tmp_path, "--language", "zh")
    assert code == 0 and summary["status"] == "done", err
    citations = summary["citations"]
    assert citations["total"] > 0 and citations["unchecked"] == citations["total"]
    assert citations["verified"] == 0 and citations["flagged"] == 0 and summary["quality"]["weak_sections"] == []
    assert "⚑" not in report and "not checked (another script)" in err
    exported = tmp_path / "zh.json"
    assert main(["export", summary["session_id"], "--format", "json", "--out", str(exported)]) == 0
    data = json.loads(exported.read_text(encoding="utf-8"))
    assert data["citations"]["unchecked"] == citations["unchecked"] and data["citations"]["verified"] == 0
    per_section = [s["unchecked_citations"] for s in data["sections"]]
    assert sum(per_section) == citations["unchecked"] and [s["weak_citations"] for s in data["sections"]] == [0] * 5
    assert f"*未能与所引段落核对的引用：{citations['unchecked']} 处（" in report


def test_the_exports_of_a_chinese_report_say_their_own_words_in_chinese(server, docs, capsys, tmp_path):
    """References heading and notes in the report's language, in every format; the exports still find the
    references under the Chinese heading, so each [n] links to its entry."""
    from docx import Document
    from pypdf import PdfReader

    _, summary, _, _ = run(capsys, docs, tmp_path, "--language", "zh")
    session, count = summary["session_id"], len(summary["sources"])
    paths = {fmt: tmp_path / f"zh.{fmt}" for fmt in ("md", "html", "docx", "pdf")}
    for fmt, path in paths.items():
        assert main(["export", session, "--format", fmt, "--out", str(path)]) == 0, capsys.readouterr().err
    markdown = paths["md"].read_text(encoding="utf-8")
    assert "\n## 参考文献\n" in markdown and "References" not in markdown and "未能与所引段落核对的引用" in markdown
    page = paths["html"].read_text(encoding="utf-8")
    assert ">参考文献</h2>" in page and "References" not in page
    assert all(f'id="ref-{n}"' in page and f'href="#ref-{n}"' in page for n in range(1, count + 1))
    document = Document(str(paths["docx"]))
    headings = [p.text for p in document.paragraphs if p.style.name.startswith("Heading")]
    assert headings[-1] == "参考文献"
    xml = document.element.xml  # citations jump to the references' bookmarks (Word names them ref_n)
    expected = {f"ref_{n}" for n in range(1, count + 1)}
    assert set(re.findall(r'w:anchor="(ref_\d+)"', xml)) == expected
    assert set(re.findall(r'w:name="(ref_\d+)"', xml)) == expected
    pdf_text = "".join(p.extract_text() for p in PdfReader(paths["pdf"]).pages)
    assert "参考文献" in pdf_text and "References" not in pdf_text
