"""Splitting text into overlapping, token-sized chunks with llama-index-core's SentenceSplitter.

The only module that imports llama-index. Its default tokenizer (tiktoken) and sentence splitter
(NLTK punkt) read data files that a changed environment (TIKTOKEN_CACHE_DIR, NLTK_DATA) would send it
to download, so we pass our own: a word-level tokenizer and a regex sentence splitter. Sizes are
therefore in word-level tokens (a word, a punctuation mark, or one CJK character), which track
subword tokens closely enough for chunking.
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass

from sala_report.retrieval.rank import CJK_CLASS

# a CJK character, a run of other word characters, or one punctuation mark
_TOKEN = re.compile(f"[{CJK_CLASS}]|[^\\W{CJK_CLASS}]+|[^\\w\\s]")
# A sentence ends after . ! ? and the spaces that follow, or after a CJK full stop.
_SENTENCE_END = re.compile(r"[.!?]+[\"')\]]*\s+|[。！？]+\s*")


@dataclass(frozen=True)
class ChunkConfig:
    chunk_tokens: int = 256
    overlap_tokens: int = 40


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text)


def sentences(text: str) -> list[str]:
    """Sentences with their trailing whitespace kept, since the splitter joins pieces back with ''."""
    pieces, start = [], 0
    for match in _SENTENCE_END.finditer(text):
        pieces.append(text[start : match.end()])
        start = match.end()
    if start < len(text):
        pieces.append(text[start:])
    return pieces


def split_text(text: str, config: ChunkConfig = ChunkConfig()) -> list[str]:
    """Chunks of about `chunk_tokens` tokens, neighbours sharing about `overlap_tokens`."""
    if not text.strip():
        return []
    return [c for c in _splitter(config.chunk_tokens, config.overlap_tokens).split_text(text) if c.strip()]


def chunk_id(location: str, content_hash: str, position: int) -> str:
    """Stable id of a chunk: the same source content always gives the same ids, changed content new ones."""
    digest = hashlib.sha1(f"{location}\0{content_hash}\0{position}".encode()).hexdigest()
    return f"c{digest[:15]}"


@functools.lru_cache(maxsize=8)
def _splitter(chunk_tokens: int, overlap_tokens: int):
    from llama_index.core.node_parser import SentenceSplitter

    return SentenceSplitter(
        chunk_size=chunk_tokens,
        chunk_overlap=overlap_tokens,
        tokenizer=tokens,
        chunking_tokenizer_fn=sentences,
        paragraph_separator="\n\n",
    )
