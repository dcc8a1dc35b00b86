"""Splitting text into overlapping, token-sized chunks that know the Markdown headings they sit under.

llama-index-core's MarkdownNodeParser cuts Markdown (what the extractor makes of HTML and Markdown files)
into sections with their heading path; its SentenceSplitter then cuts long sections. A section's
heading line leads its first chunk, so a heading is never parted from the text it introduces.

The only module that imports llama-index, and only when it first splits. Its default tokenizer
(tiktoken) and sentence splitter (NLTK punkt) read data files that a changed environment
(TIKTOKEN_CACHE_DIR, NLTK_DATA) would send it to download, so we pass our own: a word-level tokenizer
and a regex sentence splitter. Sizes are therefore in word-level tokens (a word, a punctuation mark,
or one CJK character), which track subword tokens closely enough for chunking.
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
# A Markdown heading line as MarkdownNodeParser reads one: hashes, one space, the title.
_HEADING = re.compile(r"^(#+)\s(.*)")
_ANY_HEADING = re.compile(r"^#+\s", re.M)
# Joins the parser's header path; a heading line cannot contain it, so splitting on it is exact.
_PATH_SEPARATOR = "\n"


@dataclass(frozen=True)
class ChunkConfig:
    chunk_tokens: int = 256
    overlap_tokens: int = 40


class Chunk(str):
    """A chunk's text carrying `heading_path`: the titles of the headings it sits under, outermost first
    (empty before the first heading and in text without headings). A str, so callers that want only
    the text (SourceRecord.chunks, the benchmarks) take chunks as they are."""

    heading_path: tuple[str, ...]

    def __new__(cls, text: str, heading_path: tuple[str, ...] = ()) -> Chunk:
        chunk = super().__new__(cls, text)
        chunk.heading_path = heading_path
        return chunk


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


def split_text(text: str, config: ChunkConfig = ChunkConfig()) -> list[Chunk]:
    """Chunks of about `chunk_tokens` tokens, each inside one Markdown section; neighbours in a section
    share about `overlap_tokens`."""
    if not text.strip():
        return []
    splitter = _splitter(config.chunk_tokens, config.overlap_tokens)
    return [Chunk(c, path) for path, section in sections(text) for c in splitter.split_text(section) if c.strip()]


def sections(text: str) -> list[tuple[tuple[str, ...], str]]:
    """(heading path, text) of each Markdown section, its heading line first. A heading with no text of
    its own (a chapter title straight above its first subsection) joins the section after it, so no
    section is a bare heading; that section's path is the deeper one."""
    if not _ANY_HEADING.search(text):  # plain text and PDFs: one section, and no parser to run
        return [((), text)]
    from llama_index.core.schema import Document

    out: list[tuple[tuple[str, ...], str]] = []
    pending = ""
    for node in _markdown_parser().get_nodes_from_node(Document(text=text)):
        content = node.get_content()
        parents = tuple(heading_title(p) for p in node.metadata["header_path"].split(_PATH_SEPARATOR) if p.strip())
        first, _, body = content.partition("\n")
        heading = _HEADING.match(first)
        path = (*parents, heading_title(heading.group(2))) if heading else parents
        if heading and not body.strip():
            pending += content + "\n\n"
            continue
        out.append((path, pending + content))
        pending = ""
    if pending:
        out.append((path, pending.rstrip()))
    return out


def heading_title(raw: str) -> str:
    """A heading line's title without the optional closing hashes (`## Title ##`)."""
    return re.sub(r"(?:^|\s+)#+\s*$", "", raw).strip()


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


@functools.lru_cache(maxsize=1)
def _markdown_parser():
    from llama_index.core.node_parser import MarkdownNodeParser

    return MarkdownNodeParser(header_path_separator=_PATH_SEPARATOR)
