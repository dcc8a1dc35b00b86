"""SentencePiece vocabularies as `tokenizers` tokenizers, from GGUF metadata (`tokenizer.ggml.model` =
"llama") or from a `tokenizer.model` file, whose protobuf is read here without the protobuf package."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import tokenizers
from tokenizers import AddedToken, decoders, models, normalizers, pre_tokenizers, processors

# piece types, the same numbers in sentencepiece_model.proto and in GGUF's tokenizer.ggml.token_type
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
SPACE = "\u2581"  # "▁": SentencePiece writes spaces as this character


@dataclass
class SentencePieceVocab:
    pieces: list[str]
    scores: list[float]
    types: list[int]
    model_type: str = "bpe"  # "bpe" or "unigram"
    unk_id: int | None = 0
    add_dummy_prefix: bool = True  # a "▁" before the text, so a first word looks like every other word
    precompiled_charsmap: bytes = b""  # the normalizer's rules (empty for identity, as Llama-style models use)
    bos_id: int | None = None
    eos_id: int | None = None
    add_bos: bool = False
    add_eos: bool = False
    byte_fallback: bool = field(init=False)

    def __post_init__(self):
        n = len(self.pieces)
        if len(self.scores) != n or len(self.types) != n:
            raise ValueError(
                f"expected {n} scores and token types (one per piece), received {len(self.scores)} and {len(self.types)}"
            )
        self.byte_fallback = BYTE in self.types


def to_tokenizer(vocab: SentencePieceVocab) -> tokenizers.Tokenizer:
    """A tokenizers.Tokenizer that splits text the way SentencePiece (and transformers' LlamaTokenizer) does.

    BPE vocabularies carry scores, not merges: the merges are every split of a normal piece into two
    pieces of the vocabulary, best score first, which is the order SentencePiece merges in.
    Control and unknown pieces (<s>, </s>, <unk>, <|im_end|>) become special tokens and user-defined
    ones (<think>) plain added tokens, so both are matched whole in text, as transformers does.
    """
    unk = vocab.pieces[vocab.unk_id] if vocab.unk_id is not None and 0 <= vocab.unk_id < len(vocab.pieces) else None
    if vocab.model_type == "unigram":
        pieces = [(p, float(s)) for p, s in zip(vocab.pieces, vocab.scores)]
        model = models.Unigram(pieces, unk_id=vocab.unk_id, byte_fallback=vocab.byte_fallback)
    elif vocab.model_type == "bpe":
        ids = {p: i for i, p in enumerate(vocab.pieces)}
        model = models.BPE(
            vocab=ids, merges=merges(vocab), unk_token=unk, fuse_unk=True, byte_fallback=vocab.byte_fallback
        )
    else:
        raise ValueError(f"expected a 'bpe' or 'unigram' SentencePiece model, received '{vocab.model_type}'")
    tok = tokenizers.Tokenizer(model)
    if vocab.precompiled_charsmap:
        tok.normalizer = normalizers.Precompiled(vocab.precompiled_charsmap)
    # "first": one "▁" at the start of the text, none again after each special token inside it
    scheme = "first" if vocab.add_dummy_prefix else "never"
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=SPACE, prepend_scheme=scheme, split=False)
    steps = [decoders.Replace(SPACE, " "), decoders.ByteFallback(), decoders.Fuse()]
    tok.decoder = decoders.Sequence(steps + ([decoders.Strip(" ", 1, 0)] if vocab.add_dummy_prefix else []))
    special = [
        AddedToken(p, special=True, normalized=False)
        for p, t in zip(vocab.pieces, vocab.types)
        if t in (CONTROL, UNKNOWN)
    ]
    tok.add_special_tokens(special)
    tok.add_tokens(
        [AddedToken(p, special=False, normalized=False) for p, t in zip(vocab.pieces, vocab.types) if t == USER_DEFINED]
    )
    tok.post_processor = _post_processor(vocab)
    return tok


def merges(vocab: SentencePieceVocab) -> list[tuple[str, str]]:
    """BPE merges implied by the scores: for each normal piece of two or more characters, each way to
    cut it into two pieces of the vocabulary; higher-scored results first, longer left parts first."""
    ids = {p: i for i, p in enumerate(vocab.pieces)}
    found = []
    for i, piece in enumerate(vocab.pieces):
        if vocab.types[i] != NORMAL or len(piece) < 2:
            continue
        cuts = [
            (ids[piece[:k]], ids[piece[k:]], k) for k in range(1, len(piece)) if piece[:k] in ids and piece[k:] in ids
        ]
        for _, _, k in sorted(cuts):
            found.append((-vocab.scores[i], -k, k - len(piece), len(found), piece[:k], piece[k:]))
    found.sort()
    return [(left, right) for *_, left, right in found]


def _post_processor(vocab: SentencePieceVocab):
    bos = vocab.pieces[vocab.bos_id] if vocab.add_bos and vocab.bos_id is not None else None
    eos = vocab.pieces[vocab.eos_id] if vocab.add_eos and vocab.eos_id is not None else None
    if bos is None and eos is None:
        return None

    def around(seq: str, type_id: int) -> str:
        return " ".join(t for t in (bos and f"{bos}:{type_id}", f"${seq}:{type_id}", eos and f"{eos}:{type_id}") if t)

    special = [(t, i) for t, i in ((bos, vocab.bos_id), (eos, vocab.eos_id)) if t is not None]
    return processors.TemplateProcessing(
        single=around("A", 0), pair=around("A", 0) + " " + around("B", 1), special_tokens=special
    )


def read_model_proto(data: bytes) -> SentencePieceVocab:
    """Parse a serialized sentencepiece ModelProto (a `tokenizer.model` file).

    Only the fields needed to tokenize are read: the pieces (field 1: piece 1, score 2, type 3), the
    trainer spec (2: model_type 3, unk_id 40, bos_id 41, eos_id 42) and the normalizer spec (3:
    precompiled_charsmap 2, add_dummy_prefix 3). Like transformers, remove_extra_whitespaces is not
    applied (Llama-style models turn it off). Raises ValueError on bytes that are not such a message.
    """
    pieces, scores, types = [], [], []
    trainer: dict[int, int] = {}
    normalizer: dict[int, object] = {}
    for number, value in _fields(data):
        if number == 1:
            piece, score, kind = "", 0.0, NORMAL
            for n, v in _fields(_bytes(value)):
                if n == 1:
                    piece = _bytes(v).decode("utf-8")
                elif n == 2:
                    score = struct.unpack("<f", _bytes(v))[0]
                elif n == 3:
                    kind = v
            pieces.append(piece)
            scores.append(score)
            types.append(kind)
        elif number == 2:
            trainer.update((n, v) for n, v in _fields(_bytes(value)) if n in (3, 40, 41, 42))
        elif number == 3:
            normalizer.update((n, v) for n, v in _fields(_bytes(value)) if n in (2, 3))
    if not pieces:
        raise ValueError("expected a SentencePiece model with pieces, received a message without any")
    kinds = {1: "unigram", 2: "bpe", 3: "word", 4: "char"}
    return SentencePieceVocab(
        pieces,
        scores,
        types,
        model_type=kinds.get(trainer.get(3, 1), f"type {trainer.get(3)}"),
        unk_id=_id(trainer, 40, 0),
        add_dummy_prefix=bool(normalizer.get(3, 1)),
        precompiled_charsmap=_bytes(normalizer.get(2, b"")),
        bos_id=_id(trainer, 41, 1),
        eos_id=_id(trainer, 42, 2),
    )


def _id(fields: dict[int, int], number: int, default: int) -> int | None:
    """An int32 id field of the trainer spec; varints carry negatives as 64-bit, and -1 means none."""
    value = fields.get(number, default)
    value = value - (1 << 64) if value >= 1 << 63 else value
    return value if value >= 0 else None


def _bytes(value) -> bytes:
    if not isinstance(value, (bytes, memoryview)):
        raise ValueError(f"expected a length-delimited protobuf field, received a number ({value})")
    return bytes(value)


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError(f"expected a protobuf varint at byte {pos}, received the end of the data")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7


def _fields(buf: bytes):
    """(field number, value) for each field of one protobuf message: ints for varints, bytes otherwise."""
    buf = memoryview(buf)
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        wire = key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            value, pos = buf[pos : pos + size], pos + size
        elif wire == 2:
            size, pos = _varint(buf, pos)
            value, pos = buf[pos : pos + size], pos + size
        else:
            raise ValueError(f"expected protobuf wire type 0, 1, 2 or 5, received {wire}")
        if pos > len(buf):
            raise ValueError(f"expected a protobuf field to end by byte {len(buf)}, received one ending at {pos}")
        yield key >> 3, value
