"""SentencePiece vocabularies (MiniCPM, Llama 2): from a GGUF file and from a tokenizer.model-only folder,
token ids checked against transformers' converters and against sentencepiece itself."""

from __future__ import annotations

import io
import json

import gguf
import numpy as np
import pytest
import sentencepiece
import torch

from sala_report.model import ModelError, load_model, load_tokenizer
from sala_report.model.gguf import open_gguf
from sala_report.model.spm import read_model_proto

# A small corpus in the languages the app writes in; the emoji and rarer CJK characters of TEXTS are
# not in it, so they come out as byte-fallback tokens (<0xF0><0x9F>...).
CORPUS = """Deep research needs cited sources, and reports are written section by section.
The quick brown fox jumps over the lazy dog while the model reads every page twice.
Evidence is ranked, passages are quoted, and citations point at the stored sources [1].
人工智能正在改变世界。深度研究需要引用来源，我们在本地运行模型并保存所有网页。
模型 model 研究 research 报告 report 引用 citation 2026 年 12 月 3 日，共 45 个来源。
Mixed lines: the 模型 writes a 报告 about research, then checks each 引用 again.
    def score(passage): return passage.count("model") * 2  # indented code
""".splitlines()
TEXTS = [
    "Deep research on 人工智能 in 2026: 12 sources, 3 reports.",
    "The model reads 🙂 and 🚀 — emoji, then 龘 (a rare character) and Ωμέγα.",
    "Hello world\n\n  indented  twice\tand a tab",
    "<|im_start|>user\nWrite a report on 模型<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n",
    "end with spaces   ",
]


def _train(model_type: str, vocab_size: int = 600) -> bytes:
    out = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS * 30),
        model_writer=out,
        model_type=model_type,
        vocab_size=vocab_size,
        byte_fallback=True,
        character_coverage=1.0,
        split_digits=True,
        allow_whitespace_only_pieces=True,
        normalization_rule_name="identity",  # as Llama's and MiniCPM's models
        remove_extra_whitespaces=False,
        user_defined_symbols=["<think>", "</think>"],
        control_symbols=["<|im_start|>", "<|im_end|>"],
        minloglevel=2,
    )
    return out.getvalue()


@pytest.fixture(scope="session")
def spm_bpe() -> bytes:
    """A real SentencePiece BPE model (Llama style: byte fallback, identity normalization), trained in ~0.1 s."""
    return _train("bpe")


def write_spm_gguf(
    path, model: bytes, *, tokenizer_model: str = "llama", n_vocab: int | None = None, rows: int | None = None
):
    """A llama-arch GGUF whose vocabulary is written the way llama.cpp's convert_hf_to_gguf.py writes a
    SentencePiece one (_set_vocab_sentencepiece): every piece, its score and type, the special ids and flags.
    `n_vocab` is the model's vocab_size (the width of its logits), `rows` the embedding's rows (default: the same)."""
    sp = sentencepiece.SentencePieceProcessor(model_proto=model)
    n = sp.get_piece_size()
    hidden, vocab = 32, n_vocab or n
    w = gguf.GGUFWriter(str(path), "llama")
    sizes = {
        "block_count": 1,
        "context_length": 256,
        "embedding_length": hidden,
        "feed_forward_length": 48,
        "attention.head_count": 2,
        "attention.head_count_kv": 2,
        "rope.dimension_count": hidden // 2,
        "vocab_size": vocab,
    }
    for key, value in sizes.items():
        w.add_uint32(f"llama.{key}", value)
    w.add_float32("llama.attention.layer_norm_rms_epsilon", 1e-5)
    w.add_tokenizer_model(tokenizer_model)
    w.add_token_list([sp.id_to_piece(i) for i in range(n)])
    w.add_token_scores([sp.get_score(i) for i in range(n)])
    w.add_token_types([_token_type(sp, i) for i in range(n)])
    w.add_bos_token_id(sp.bos_id())
    w.add_eos_token_id(sp.eos_id())
    w.add_unk_token_id(sp.unk_id())
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    w.add_add_space_prefix(True)
    w.add_chat_template("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}")
    rng = np.random.default_rng(0)
    shapes = {"token_embd.weight": (rows or vocab, hidden), "output_norm.weight": (hidden,)}
    for name in ("attn_norm", "ffn_norm"):
        shapes[f"blk.0.{name}.weight"] = (hidden,)
    for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
        shapes[f"blk.0.{name}.weight"] = (hidden, hidden)
    shapes.update({"blk.0.ffn_gate.weight": (48, hidden), "blk.0.ffn_up.weight": (48, hidden)})
    shapes["blk.0.ffn_down.weight"] = (hidden, 48)
    for name, shape in shapes.items():
        w.add_tensor(name, rng.standard_normal(shape).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def _token_type(sp, i: int) -> gguf.TokenType:
    if sp.is_unknown(i):
        return gguf.TokenType.UNKNOWN
    if sp.is_control(i):
        return gguf.TokenType.CONTROL
    if sp.is_byte(i):
        return gguf.TokenType.BYTE
    if sp.id_to_piece(i) in ("<think>", "</think>"):  # sentencepiece has no accessor for user-defined pieces
        return gguf.TokenType.USER_DEFINED
    return gguf.TokenType.NORMAL


def _transformers_gguf_tokenizer(path):
    """transformers' own GGUF route: AutoTokenizer reads the metadata and converts the vocabulary."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


def test_sentencepiece_gguf_ids_equal_transformers(tmp_path, spm_bpe):
    write_spm_gguf(tmp_path / "spm.gguf", spm_bpe)
    ours = load_tokenizer(tmp_path / "spm.gguf")
    theirs = _transformers_gguf_tokenizer(tmp_path / "spm.gguf")
    for text in TEXTS:
        assert ours.encode(text) == theirs.encode(text, add_special_tokens=False), text
        assert ours.encode(text, add_special_tokens=True) == theirs.encode(text), text
    fallback = ours.encode(TEXTS[1])
    assert ours.token_id("<0xF0>") in fallback  # the emoji really went through byte fallback
    assert (
        ours.decode(fallback) == TEXTS[1]
        and ours.decode(ours.encode(TEXTS[0], True), skip_special_tokens=True) == TEXTS[0]
    )
    assert ours.encode("<think>") == [ours.token_id("<think>")] and ours.encode("<|im_end|>") == [
        ours.token_id("<|im_end|>")
    ]
    assert ours.eos_token_ids == [2, ours.token_id("<|im_end|>")]  # the template's end-of-turn marker stops generation


def test_sentencepiece_gguf_matches_sentencepiece_itself(tmp_path, spm_bpe):
    """Independent of transformers: where SentencePiece and the HF convention agree (text that does not
    start with a space, no control markers, which sentencepiece never matches in text), the ids are equal."""
    write_spm_gguf(tmp_path / "spm.gguf", spm_bpe)
    ours = load_tokenizer(tmp_path / "spm.gguf")
    sp = sentencepiece.SentencePieceProcessor(model_proto=spm_bpe)
    for text in TEXTS[:3] + TEXTS[4:]:
        assert ours.encode(text) == sp.encode(text), text


def test_sentencepiece_gguf_loads_as_a_model(tmp_path, spm_bpe):
    write_spm_gguf(tmp_path / "spm.gguf", spm_bpe, n_vocab=640)  # logits wider than the vocabulary, as MiniCPM's
    lm = load_model(tmp_path / "spm.gguf", device="cpu")
    tok = load_tokenizer(tmp_path / "spm.gguf")
    ids = torch.tensor([tok.encode(TEXTS[0], add_special_tokens=True)])
    assert lm(ids).shape == (1, ids.shape[1], 640) and tok.vocab_size == 640


def test_unsupported_vocabulary_fails_before_any_tensor(tmp_path, spm_bpe):
    """A vocabulary we cannot read is refused from the metadata, before tensors are checked or read:
    here the tensors do not even match the config, and the error is still the tokenizer's."""
    write_spm_gguf(tmp_path / "bert.gguf", spm_bpe, tokenizer_model="bert", n_vocab=999, rows=600)
    reader = open_gguf(tmp_path / "bert.gguf")
    assert reader.fields["llama.vocab_size"] == 999 and reader.tensors[0].shape == (600, 32)
    with pytest.raises(ModelError, match="GGUF tokenizer model 'bert'") as err:
        load_model(tmp_path / "bert.gguf", device="cpu")
    assert err.value.title == "Unsupported tokenizer" and "'llama' (SentencePiece)" in err.value.message


def _spm_folder(tmp_path, model: bytes, **config):
    folder = tmp_path / "spm-folder"
    folder.mkdir()
    (folder / "tokenizer.model").write_bytes(model)
    (folder / "config.json").write_text(json.dumps({"vocab_size": 608, "eos_token_id": [2]}))
    tc = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "add_bos_token": True}
    tc.update(add_eos_token=False, tokenizer_class="LlamaTokenizer", **config)
    (folder / "tokenizer_config.json").write_text(json.dumps(tc))
    return folder


def test_tokenizer_model_only_folder_ids_equal_transformers(tmp_path, spm_bpe):
    from transformers import LlamaTokenizer

    extra = {"600": {"content": "<|tool_call|>", "special": True}, "601": {"content": "<ref>", "special": False}}
    folder = _spm_folder(tmp_path, spm_bpe, added_tokens_decoder=extra)
    ours = load_tokenizer(folder)
    theirs = LlamaTokenizer.from_pretrained(str(folder))
    for text in TEXTS + ["call <|tool_call|> with <ref> 1"]:
        assert ours.encode(text) == theirs.encode(text, add_special_tokens=False), text
        assert ours.encode(text, add_special_tokens=True) == theirs.encode(text), text
    assert ours.token_id("<|tool_call|>") == 600 and ours.bos_token == "<s>" and ours.eos_token_ids == [2]
    assert ours.vocab_size == 608


def test_tokenizer_model_read_without_protobuf_equals_sentencepiece(spm_bpe):
    """Our protobuf reader against sentencepiece's own accessors, piece by piece."""
    sp = sentencepiece.SentencePieceProcessor(model_proto=spm_bpe)
    vocab = read_model_proto(spm_bpe)
    assert vocab.pieces == [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
    assert vocab.scores == [pytest.approx(sp.get_score(i)) for i in range(sp.get_piece_size())]
    assert vocab.types[:7] == [2, 3, 3, 3, 3, 4, 4] and vocab.types.count(6) == 256
    assert (vocab.model_type, vocab.unk_id, vocab.bos_id, vocab.eos_id, vocab.add_dummy_prefix) == (
        "bpe",
        0,
        1,
        2,
        True,
    )


def test_damaged_tokenizer_model(tmp_path, spm_bpe):
    folder = _spm_folder(tmp_path, spm_bpe[: len(spm_bpe) // 2])
    with pytest.raises(ModelError, match="not a readable SentencePiece model"):
        load_tokenizer(folder)


def test_unigram_tokenizer_model_equals_sentencepiece(tmp_path):
    """A Unigram model (T5-style SentencePiece) becomes a tokenizers Unigram, not BPE merges: ids equal
    sentencepiece's own wherever the HF convention agrees with it (see the GGUF test above)."""
    model = _train("unigram", vocab_size=400)
    assert read_model_proto(model).model_type == "unigram"
    tok = load_tokenizer(_spm_folder(tmp_path, model))
    sp = sentencepiece.SentencePieceProcessor(model_proto=model)
    for text in TEXTS[:3] + TEXTS[4:]:
        assert tok.encode(text) == sp.encode(text), text
        assert tok.decode(tok.encode(text)) == text
