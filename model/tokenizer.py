"""Tokenizer and chat template: tokenizer.json through `tokenizers`, or GGUF metadata rebuilt as a
`tokenizers.Tokenizer`; chat templates rendered with jinja2 the way transformers renders them."""

from __future__ import annotations

import json
import struct
from datetime import datetime
from pathlib import Path

import jinja2
import tokenizers
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import AddedToken, decoders, models, pre_tokenizers, processors

from . import spm
from .errors import ModelError

_NO_THINK = "<think>\n\n</think>\n\n"


class Tokenizer:
    def __init__(
        self,
        hf: tokenizers.Tokenizer,
        *,
        vocab_size: int,
        eos_token_ids: list[int],
        chat_template: str | None = None,
        bos_token: str | None = None,
        eos_token: str | None = None,
    ):
        self.hf = hf
        self.vocab_size = vocab_size  # the width of the model's logits, which may exceed the tokenizer's vocab
        self.eos_token_ids = list(dict.fromkeys(eos_token_ids))
        self.chat_template = chat_template
        self.bos_token = bos_token
        self.eos_token = eos_token

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return self.hf.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        return self.hf.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def token_id(self, token: str) -> int | None:
        return self.hf.token_to_id(token)

    def apply_chat_template(
        self, messages: list[dict], add_generation_prompt: bool = True, enable_thinking: bool | None = None, **extra
    ) -> str:
        """Render the checkpoint's chat template. enable_thinking=False turns reasoning off for MiniCPM
        templates: passed to the template, or, for a template that ignores it, an empty think block is pre-filled."""
        if not self.chat_template:
            raise ModelError("this model has no chat template", hint="Format the prompt yourself, or use a chat model.")
        context = dict(
            messages=messages,
            add_generation_prompt=add_generation_prompt,
            bos_token=self.bos_token or "",
            eos_token=self.eos_token or "",
            tools=None,
            **extra,
        )
        if enable_thinking is not None:
            context["enable_thinking"] = enable_thinking
        text = _compile(self.chat_template).render(**context)
        if (
            enable_thinking is False
            and add_generation_prompt
            and "enable_thinking" not in self.chat_template
            and self.token_id("<think>") is not None
        ):
            text += _NO_THINK
        return text


def _raise(message: str):
    raise jinja2.TemplateError(message)


def _tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


_TEMPLATES: dict[str, jinja2.Template] = {}


def _compile(source: str) -> jinja2.Template:
    if source not in _TEMPLATES:
        # the same environment settings as transformers' chat templates
        env = ImmutableSandboxedEnvironment(
            trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
        )
        env.filters["tojson"] = _tojson
        env.globals["raise_exception"] = _raise
        env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
        try:
            _TEMPLATES[source] = env.from_string(source)
        except jinja2.TemplateSyntaxError as e:
            raise ModelError(f"the chat template does not compile: {e}") from None
    return _TEMPLATES[source]


def _token_text(tok) -> str | None:
    if isinstance(tok, dict):
        return tok.get("content")
    return tok if isinstance(tok, str) else None


def tokenizer_from_folder(folder: Path) -> Tokenizer:
    if not (folder / "tokenizer.json").exists() and not (folder / "tokenizer.model").exists():
        raise ModelError(
            f"no tokenizer.json or tokenizer.model in {folder}", hint="Download the checkpoint's tokenizer files too."
        )
    path = folder / "tokenizer.json"
    tc = _json(folder / "tokenizer_config.json")
    if path.exists():
        try:
            hf = tokenizers.Tokenizer.from_file(str(path))
        except Exception as e:  # tokenizers raises a bare Exception on malformed files
            raise ModelError(f"{path} cannot be read: {e}") from None
    else:
        hf = _sentencepiece_folder(folder, tc)
    cfg = _json(folder / "config.json")
    gen = _json(folder / "generation_config.json")
    template = None
    if (folder / "chat_template.jinja").exists():
        template = (folder / "chat_template.jinja").read_text(encoding="utf-8")
    elif isinstance(tc.get("chat_template"), str):
        template = tc["chat_template"]
    elif isinstance(tc.get("chat_template"), list):  # named templates; "default" is the chat one
        named = {t.get("name"): t.get("template") for t in tc["chat_template"]}
        template = named.get("default") or next(iter(named.values()), None)
    bos, eos = _token_text(tc.get("bos_token")), _token_text(tc.get("eos_token"))
    eos_ids = [hf.token_to_id(eos)] if eos and hf.token_to_id(eos) is not None else []
    for src in (gen, cfg):
        e = src.get("eos_token_id")
        eos_ids += e if isinstance(e, list) else ([e] if isinstance(e, int) else [])
    vocab = cfg.get("vocab_size") or hf.get_vocab_size(with_added_tokens=True)
    return Tokenizer(hf, vocab_size=vocab, eos_token_ids=eos_ids, chat_template=template, bos_token=bos, eos_token=eos)


def _sentencepiece_folder(folder: Path, tc: dict) -> tokenizers.Tokenizer:
    """The tokenizer of a folder with only `tokenizer.model`, as transformers' LlamaTokenizer builds it,
    plus the added tokens tokenizer_config.json / added_tokens.json list (chat markers such as <|im_end|>)."""
    path = folder / "tokenizer.model"
    try:
        vocab = spm.read_model_proto(path.read_bytes())
    except (ValueError, UnicodeDecodeError, struct.error) as e:
        hint = "The file may be truncated by an interrupted download; fetch it again."
        raise ModelError(f"{path} is not a readable SentencePiece model: {e}", hint=hint) from None
    vocab.add_bos = bool(tc.get("add_bos_token", True))
    vocab.add_eos = bool(tc.get("add_eos_token", False))
    try:
        hf = spm.to_tokenizer(vocab)
    except ValueError as e:
        raise ModelError(f"{path}: {e}", hint="Use a checkpoint that ships tokenizer.json.") from None
    added = {
        int(i): t for i, t in (tc.get("added_tokens_decoder") or {}).items() if isinstance(t, dict) and "content" in t
    }
    for content, i in _json(folder / "added_tokens.json").items():
        added.setdefault(int(i), {"content": content, "special": True})
    for i in sorted(added):
        t = added[i]
        token = AddedToken(t["content"], special=bool(t.get("special")), normalized=False)
        if token.special:
            hf.add_special_tokens([token])
        else:
            hf.add_tokens([token])
        got = hf.token_to_id(t["content"])
        if got != i:
            message = f"{folder}: added token {t['content']!r} should have id {i}, but the vocabulary gives it {got}"
            raise ModelError(message, hint="Use a checkpoint that ships tokenizer.json.")
    return hf


def _json(path: Path) -> dict:
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ModelError(f"{path} is not valid JSON: {e}") from None
    return data if isinstance(data, dict) else {}


GGUF_TOKENIZERS = ("gpt2", "llama")  # tokenizer.ggml.model: byte-level BPE, SentencePiece
# end-of-turn tokens llama.cpp also stops on, by their text, when the file's eos id names another token
_END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>")


def check_gguf_vocab(reader, path: Path, *, required: bool = True) -> None:
    """Raise one ModelError if the file's vocabulary cannot become a tokenizer. It reads metadata only,
    so load_model calls it before any tensor; there `required=False` lets a file with no vocabulary
    at all (weights only) through."""
    from .gguf import field

    kind = field(reader, "tokenizer.ggml.model", None)
    if kind is None and not required and field(reader, "tokenizer.ggml.tokens", None) is None:
        return
    hint = "Use the Hugging Face checkpoint folder, whose tokenizer files are read directly."
    title = "Unsupported tokenizer"
    if kind not in GGUF_TOKENIZERS:
        supported = "'gpt2' (byte-level BPE) and 'llama' (SentencePiece)"
        message = (
            f"{path}: GGUF tokenizer model '{kind}' (tokenizer.ggml.model) is not supported; supported: {supported}"
        )
        raise ModelError(message, hint=hint, title=title)
    tokens = field(reader, "tokenizer.ggml.tokens", None) or []
    needed = ["tokenizer.ggml.tokens", "tokenizer.ggml.merges" if kind == "gpt2" else "tokenizer.ggml.scores"]
    problems = [f"{key} is missing" for key in needed if not field(reader, key, None)]
    for key in ("tokenizer.ggml.scores", "tokenizer.ggml.token_type"):
        values = field(reader, key, None)
        if tokens and values is not None and len(values) != len(tokens):
            problems.append(f"{key} has {len(values)} entries, expected {len(tokens)}")
    if problems:
        raise ModelError(f"{path}: the GGUF vocabulary is incomplete ({'; '.join(problems)})", hint=hint, title=title)


def tokenizer_from_gguf(reader, path: Path) -> Tokenizer:
    from .gguf import field

    check_gguf_vocab(reader, path)
    tokens = field(reader, "tokenizer.ggml.tokens")
    types = field(reader, "tokenizer.ggml.token_type", [1] * len(tokens))
    bos_id = field(reader, "tokenizer.ggml.bos_token_id", None)
    eos_id = field(reader, "tokenizer.ggml.eos_token_id", None)
    if field(reader, "tokenizer.ggml.model") == "llama":
        vocab = spm.SentencePieceVocab(
            tokens,
            field(reader, "tokenizer.ggml.scores"),
            types,
            unk_id=field(reader, "tokenizer.ggml.unknown_token_id", None),
            add_dummy_prefix=field(reader, "tokenizer.ggml.add_space_prefix", True),
            bos_id=bos_id,
            eos_id=eos_id,
            # llama.cpp adds BOS to a SentencePiece vocabulary that does not say otherwise
            add_bos=field(reader, "tokenizer.ggml.add_bos_token", True),
            add_eos=field(reader, "tokenizer.ggml.add_eos_token", False),
        )
        hf = spm.to_tokenizer(vocab)
    else:
        hf = _byte_level_bpe(reader, tokens, types, bos_id)
    eos_ids = [i for i in (eos_id, field(reader, "tokenizer.ggml.eot_token_id", None)) if i is not None]
    template = field(reader, "tokenizer.chat_template", None)
    ends = [t for t in _END_OF_TURN if t in (template or "")]
    eos_ids += [i for i, (t, kind) in enumerate(zip(tokens, types)) if kind == spm.CONTROL and t in ends]
    arch = field(reader, "general.architecture")
    return Tokenizer(
        hf,
        vocab_size=field(reader, f"{arch}.vocab_size", len(tokens)),
        eos_token_ids=eos_ids,
        chat_template=template,
        bos_token=tokens[bos_id] if bos_id is not None else None,
        eos_token=tokens[eos_id] if eos_id is not None else None,
    )


def _byte_level_bpe(reader, tokens: list[str], types: list[int], bos_id: int | None) -> tokenizers.Tokenizer:
    from .gguf import field

    merges = [tuple(m.split(" ", 1)) for m in field(reader, "tokenizer.ggml.merges")]
    hf = tokenizers.Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges, fuse_unk=False))
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if field(reader, "tokenizer.ggml.pre", "default") == "smollm":
        # llama.cpp's smollm pre-tokenizer splits digits one by one before the GPT-2 regex
        hf.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    else:
        hf.pre_tokenizer = byte_level
    hf.decoder = decoders.ByteLevel()
    # control tokens (type 3) are special; user-defined ones (type 4) are matched whole but kept in text
    hf.add_tokens([AddedToken(tokens[i], special=False, normalized=False) for i, t in enumerate(types) if t == 4])
    hf.add_special_tokens(
        [AddedToken(tokens[i], special=True, normalized=False) for i, t in enumerate(types) if t == 3]
    )
    if field(reader, "tokenizer.ggml.add_bos_token", False) and bos_id is not None:
        bos = tokens[bos_id]
        hf.post_processor = processors.TemplateProcessing(single=f"{bos} $A", special_tokens=[(bos, bos_id)])
    return hf
