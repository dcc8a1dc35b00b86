"""Chunking: token-sized overlapping chunks inside Markdown sections that know their heading path, and
llama-index never reaching for the network."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from sala_report.retrieval import Store
from sala_report.retrieval.chunk import ChunkConfig, chunk_id, sections, sentences, split_text, tokens
from sala_report.retrieval.documents import ingest_folder

REPO = Path(__file__).resolve().parents[2]


def test_chunks_respect_the_token_budget_and_overlap():
    text = " ".join(f"Sentence {i} describes the harbour at dawn." for i in range(200))
    config = ChunkConfig(chunk_tokens=64, overlap_tokens=16)
    chunks = split_text(text, config)
    assert len(chunks) > 10
    assert all(len(tokens(c)) <= 64 for c in chunks)
    for left, right in zip(chunks, chunks[1:]):
        assert left.split(". ")[-1].rstrip(".") in right  # neighbours share their boundary sentence


def test_sentences_keep_their_whitespace_so_chunks_read_naturally():
    text = "One. Two!  Three?\n\n机器学习。第二句。tail"
    assert "".join(sentences(text)) == text
    assert split_text(text) == [text]


def test_cjk_counts_each_character_as_a_token():
    assert tokens("机器学习 ok") == ["机", "器", "学", "习", "ok"]


NESTED = """Notes taken before any heading.

# Rivers of Europe

## The Danube ##

The Danube flows east. It crosses ten countries.

### Its delta

The delta lies in Romania.

```
# a comment in code, not a heading
```

## The Rhine

### Source
The Rhine rises in the Alps.

#### Glaciers

Two glaciers feed it.

# Lakes

Lake Geneva is deep.
"""


def test_nested_headings_give_each_chunk_its_heading_path():
    got = [(c.heading_path, c.split("\n")[0]) for c in split_text(NESTED)]
    assert got == [
        ((), "Notes taken before any heading."),
        # a title with nothing of its own under it travels with the section after it
        (("Rivers of Europe", "The Danube"), "# Rivers of Europe"),
        (("Rivers of Europe", "The Danube", "Its delta"), "### Its delta"),
        (("Rivers of Europe", "The Rhine", "Source"), "## The Rhine"),
        (("Rivers of Europe", "The Rhine", "Source", "Glaciers"), "#### Glaciers"),
        (("Lakes",), "# Lakes"),
    ]
    delta = split_text(NESTED)[2]
    assert "# a comment in code, not a heading" in delta and delta.rstrip().endswith("```")


def test_text_without_headings_is_one_section_split_as_before():
    text = " ".join(f"Sentence {i} describes the harbour at dawn." for i in range(200))
    assert sections(text) == [((), text)]
    assert all(c.heading_path == () for c in split_text(text, ChunkConfig(64, 16)))


def test_a_heading_is_never_parted_from_its_first_paragraph():
    """Paragraphs just short of a chunk: a splitter blind to headings ends chunks on the next heading line."""
    paragraph = " ".join(f"Fact {i} about the coast." for i in range(9))  # 54 tokens
    parts = []
    for n in range(12):
        parts += [f"{'#' * (1 + n % 3)} Part {n}", f"Part {n} opens here. {paragraph}", paragraph]
    text = "\n\n".join(parts)
    config = ChunkConfig(chunk_tokens=64, overlap_tokens=8)
    chunks = split_text(text, config)
    assert all(len(tokens(c)) <= 64 for c in chunks)
    for n in range(12):
        holding = [c for c in chunks if f"# Part {n}\n" in c]
        assert holding, f"heading {n} lost"
        for c in holding:
            after = c.split(f"# Part {n}\n", 1)[1]
            assert after.lstrip().startswith(f"Part {n} opens here."), c
            assert c.heading_path[-1] == f"Part {n}"
    for c in chunks:  # and no chunk ends on a heading line
        assert not c.rstrip().split("\n")[-1].startswith("#"), c


RIVERS_HTML = b"""<html><head><title>Rivers</title></head><body><article>
<h1>Rivers of Europe</h1><p>Rivers carry water to the sea and shape the land around them over long ages.</p>
<h2>The Danube</h2><p>The Danube flows east through ten countries before it reaches the Black Sea.</p>
<h3>Its delta</h3><p>The delta lies mostly in Romania and is a large wetland full of birds and fish.</p>
<h2>The Rhine</h2><p>The Rhine rises in the Alps and flows north to the North Sea past many cities.</p>
</article></body></html>"""


def test_html_and_markdown_files_reach_the_store_with_their_heading_paths(tmp_path):
    """Through the real extractor (trafilatura keeps <hN> as Markdown headings) and folder ingest."""
    (tmp_path / "rivers.html").write_bytes(RIVERS_HTML)
    (tmp_path / "notes.md").write_text("# Field notes\n\n## Wetlands\n\nHerons wade in the shallows.\n")
    with Store.open(tmp_path / "sala.db") as store:
        assert ingest_folder(store, tmp_path).added == 2
        found = {p.text.split("\n")[0]: p.heading_path for p in store.passages("delta wetland herons Rhine", 10)}
    assert found == {
        "### Its delta": ("Rivers of Europe", "The Danube", "Its delta"),
        "## The Rhine": ("Rivers of Europe", "The Rhine"),
        "# Field notes": ("Field notes", "Wetlands"),
    }


def test_empty_text_has_no_chunks():
    assert split_text("  \n ") == []


def test_chunk_ids_are_deterministic():
    assert chunk_id("/a", "h", 0) == chunk_id("/a", "h", 0) != chunk_id("/a", "h", 1)


OFFLINE_SCRIPT = """
import json, socket, sys
attempts = []
def refuse(*args, **kwargs):
    attempts.append(repr(args[:2]))
    raise OSError("network disabled in this test")
socket.socket.connect = refuse
socket.create_connection = refuse
socket.getaddrinfo = refuse
import sala_report.retrieval
loaded_early = any(name.startswith("llama_index") for name in sys.modules)
from sala_report.retrieval.chunk import split_text
chunks = split_text("First sentence here. " * 300)
print(json.dumps({"attempts": attempts, "loaded_early": loaded_early, "chunks": len(chunks)}))
"""


def test_chunking_works_offline_with_tokenizer_caches_pointed_elsewhere(tmp_path):
    """llama-index's defaults would download NLTK and tiktoken data when these point at empty folders."""
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "NLTK_DATA": str(tmp_path / "nltk"),
        "TIKTOKEN_CACHE_DIR": str(tmp_path / "tiktoken"),
        "LLAMA_INDEX_CACHE_DIR": str(tmp_path / "li"),
    }
    out = subprocess.run(
        [sys.executable, "-c", OFFLINE_SCRIPT], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report == {"attempts": [], "loaded_early": False, "chunks": report["chunks"]}
    assert report["chunks"] > 1
    assert not (tmp_path / "nltk").exists() and not (tmp_path / "tiktoken").exists()
