"""Chunking: token-sized overlapping chunks, and llama-index never reaching for the network."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from sala_report.retrieval.chunk import ChunkConfig, chunk_id, sentences, split_text, tokens

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
