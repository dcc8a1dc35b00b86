"""Constrained decoding with llguidance on our two tokenizer styles: SmolLM2's byte-level BPE and a
MiniCPM-style SentencePiece tokenizer.json (metaspace, byte fallback) built here with `tokenizers`.

Random walks through the grammar's masks must always end in an answer our validators accept, and
known-bad answers must be impossible to produce."""

from __future__ import annotations

import json
import random

import pytest
import torch
from tokenizers import Tokenizer, models, normalizers, trainers

from sala_report.app.warp.actions import ActionError, ExtendPlan, Nop, parse_response
from sala_report.app.warp.decoding import GrammarHook, ll_tokenizer
from sala_report.app.warp.grammar import (
    Style,
    extend_constraint,
    init_plan_constraint,
    search_constraint,
    write_constraint,
)
from sala_report.app.warp.validate import Limits, validate_extend, validate_init_plan, validate_search, validate_write

QUESTION = "How did solar power change electricity markets?"
KEYS = ["textid1", "textid2", "textid12"]
SMALL = Limits(max_sections=4, keyword_chars=24, title_chars=24, plan_chars=40, thought_chars=60)


def sentencepiece_tokenizer() -> Tokenizer:
    """A Llama/MiniCPM-style tokenizer.json: Prepend+Replace('▁') normalizer, BPE with byte fallback,
    byte tokens <0x00>..<0xFF> in the model vocab, and the matching decoder."""
    specials = ["<unk>", "<s>", "</s>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    corpus = [
        "The quick brown fox jumps over the lazy dog. Solar panels turn sunlight into electricity \\cite{textid1}.",
        '<thought>plan the section</thought>\n<action>{"name": "search", "keywords": ["solar", "grid"]}</action>',
        '{"name": "init-plan", "title": "Energy", "sections": [{"title": "Costs", "plan": "Prices"}]}',
    ] * 30
    trainer = trainers.BpeTrainer(
        vocab_size=700, special_tokens=specials + [f"<0x{i:02X}>" for i in range(256)], show_progress=False
    )
    tok.train_from_iterator(corpus, trainer)
    data = json.loads(tok.to_str())
    data["added_tokens"] = [t for t in data["added_tokens"] if t["content"] in specials]
    data["decoder"] = {
        "type": "Sequence",
        "decoders": [
            {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
            {"type": "ByteFallback"},
            {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0},
        ],
    }
    return Tokenizer.from_str(json.dumps(data))


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """The masks are 50k-wide vectors: on a 2-core machine shared with other work, a second torch thread
    only adds waiting."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module", params=["smollm2", "sentencepiece"])
def tokenizer(request):
    """(tokenizers.Tokenizer, vocab size, eos ids, llguidance tokenizer, each token's text)"""
    if request.param == "smollm2":
        from sala_report.model import load_tokenizer

        tok = load_tokenizer("smollm2-135m")
        hf, vocab, eos = tok.hf, tok.vocab_size, tok.eos_token_ids
    else:
        hf = sentencepiece_tokenizer()
        vocab, eos = hf.get_vocab_size(with_added_tokens=True), [hf.token_to_id("</s>")]
    pieces = [hf.decode([t]) for t in range(vocab)]
    return hf, vocab, eos, ll_tokenizer(hf, vocab_size=vocab, eos_token_ids=eos), pieces


_MID_TEXT: dict[int, Tokenizer] = {}


def _without_dummy_prefix(hf: Tokenizer) -> Tokenizer:
    if id(hf) not in _MID_TEXT:
        data = json.loads(hf.to_str())
        normalizer = data.get("normalizer") or {}
        if normalizer.get("type") == "Sequence":
            normalizer["normalizers"] = [n for n in normalizer["normalizers"] if n["type"] != "Prepend"]
        _MID_TEXT[id(hf)] = Tokenizer.from_str(json.dumps(data))
    return _MID_TEXT[id(hf)]


def encode_mid_text(tokenizer, text: str) -> list[int]:
    """Tokens of `text` as a model emits them after the prompt: no SentencePiece dummy prefix '▁'."""
    hf = tokenizer[0]
    ids = _without_dummy_prefix(hf).encode(text, add_special_tokens=False).ids
    assert hf.decode(ids) in (text, text[1:] if text.startswith(" ") else text)  # a decoder may strip one leading space
    return ids


def walk(tokenizer, constraint, seed: int, max_tokens: int = 600) -> str:
    """Sample tokens uniformly among the allowed ASCII-looking ones (any allowed one when none is),
    leaning towards closing tags so walks end."""
    hf, vocab, eos, lt, pieces = tokenizer
    plain_mask = torch.tensor([p.isascii() and bool(p.strip()) for p in pieces])
    closing_mask = plain_mask & torch.tensor([any(c in p for c in '<"]}\\') for p in pieces])
    hook = GrammarHook(lt, constraint.lark, vocab_size=vocab, max_new_tokens=max_tokens)
    rnd, out = random.Random(seed), []
    for _ in range(max_tokens):
        allowed_mask = hook(out, torch.zeros(vocab)) > float("-inf")
        assert hook.error is None
        if bool(allowed_mask[eos].any()):
            return hf.decode(out)
        plain, closing = allowed_mask & plain_mask, allowed_mask & closing_mask
        pool = closing if closing.any() and rnd.random() < 0.25 else (plain if plain.any() else allowed_mask)
        out.append(rnd.choice(torch.nonzero(pool).flatten().tolist()))
    raise AssertionError(f"walk did not finish: {hf.decode(out)[:200]!r}")


def distinct_or_none(validate):
    """The validated action, or None when it was refused only for repeating a title: no grammar can keep
    random titles apart (the validator's retry does)."""
    try:
        return validate()
    except ActionError as e:
        assert "must be different" in str(e)
        return None


@pytest.mark.parametrize("seed", range(4))
def test_random_answers_always_validate(tokenizer, seed):
    action = parse_response(walk(tokenizer, search_constraint(SMALL), seed)).action
    assert 1 <= len(validate_search(action, SMALL).keywords) <= 5
    action = parse_response(walk(tokenizer, init_plan_constraint(SMALL), seed)).action
    assert 3 <= len(validate_init_plan(action, SMALL, QUESTION).sections) <= 4
    positions = ["section-1", "section-2.1"]
    action = parse_response(walk(tokenizer, extend_constraint(SMALL, positions), seed)).action
    result = distinct_or_none(lambda: validate_extend(action, SMALL, QUESTION, positions))
    assert result is None or isinstance(result, Nop) or result.position in positions
    action = parse_response(walk(tokenizer, extend_constraint(SMALL, ["section-2"], allow_nop=False), seed)).action
    result = distinct_or_none(lambda: validate_extend(action, SMALL, QUESTION, ["section-2"], allow_nop=False))
    assert result is None or isinstance(result, ExtendPlan)
    text = parse_response(walk(tokenizer, write_constraint(SMALL, KEYS, style=Style(span=120)), seed)).action
    written = validate_write(text, SMALL, QUESTION, set(KEYS))
    assert not written.removed and "#" not in written.content


@pytest.mark.parametrize("seed", range(3))
def test_random_compact_outlines_always_validate(tokenizer, seed):
    """The compact grammars (small models): a topic list for a thought, short titles, plans without braces."""
    limits = SMALL
    action = parse_response(walk(tokenizer, init_plan_constraint(limits, compact=True), seed, max_tokens=900)).action
    assert 3 <= len(validate_init_plan(action, limits, QUESTION).sections) <= 4
    constraint = extend_constraint(limits, ["section-2"], allow_nop=False, compact=True)
    action = parse_response(walk(tokenizer, constraint, seed, max_tokens=900)).action
    assert isinstance(validate_extend(action, limits, QUESTION, ["section-2"], allow_nop=False), ExtendPlan)


def test_compact_titles_are_short_topic_names(tokenizer):
    def outline(thought: str, titles: list[str]) -> str:
        sections = [{"title": t, "plan": f"plan {i}"} for i, t in enumerate(titles)]
        return (
            f"<thought>{thought}</thought>\n<action>"
            + json.dumps({"name": "init-plan", "sections": sections, "title": "Solar markets"})
            + "</action>"
        )

    compact = init_plan_constraint(Limits(), compact=True)
    topics = "- Costs\n- Grid prices\n- Policy\n"
    assert accepts(tokenizer, compact, outline(topics, ["Costs", "Grid prices", "Policy"]))
    assert not accepts(tokenizer, compact, outline("I will plan", ["Costs", "Grid prices", "Policy"]))
    for bad in ("costs", "Costs [1]", "What changed?", "One two three four five six seven eight", "Costs: prices"):
        assert not accepts(tokenizer, compact, outline(topics, [bad, "Grid prices", "Policy"])), bad
    full = init_plan_constraint(Limits())

    def plan(titles: str) -> str:
        sections = [{"title": t, "plan": "p"} for t in titles]
        return (
            "<thought>x</thought>\n<action>"
            + json.dumps({"name": "init-plan", "title": "Solar", "sections": sections})
            + "</action>"
        )

    assert accepts(tokenizer, full, plan(["A", "B", "C"]))
    assert not accepts(tokenizer, full, plan(["- A", "B", "C"]))  # a title starts with a letter or digit
    assert not accepts(tokenizer, full, plan(["A", "B {x}", "C"]))


def accepts(tokenizer, constraint, text: str) -> bool:
    hf, vocab, eos, lt, _ = tokenizer
    hook = GrammarHook(lt, constraint.lark, vocab_size=vocab, max_new_tokens=1000)
    ids = encode_mid_text(tokenizer, text)
    for i, token in enumerate(ids):
        if hook(ids[:i], torch.zeros(vocab))[token] == float("-inf"):
            return False
    return bool(hook(ids, torch.zeros(vocab))[eos[0]] == 0)


def test_known_answers_accepted_and_bad_ones_impossible(tokenizer):
    good_search = (
        '<thought>look up prices</thought>\n<action>{"name": "search", "keywords": ["solar prices", "grid"]}</action>'
    )
    assert accepts(tokenizer, search_constraint(Limits()), good_search)
    six = json.dumps({"name": "search", "keywords": ["a", "b", "c", "d", "e", "f"]})
    assert not accepts(tokenizer, search_constraint(Limits()), f"<thought>x</thought>\n<action>{six}</action>")
    prose = "Solar generation doubled between 2015 and 2020 in most markets thanks to cheaper modules"
    good_write = f"<thought>use textid1</thought>\n<action>{prose} \\cite{{textid1}}. Über alles \\cite{{textid2, textid12}}.</action>"
    assert accepts(tokenizer, write_constraint(Limits(), KEYS), good_write)
    assert not accepts(tokenizer, write_constraint(Limits(), KEYS), good_write.replace("textid12", "textid9"))
    assert not accepts(tokenizer, write_constraint(Limits(), KEYS), good_write.replace("Solar", "## Solar"))
    no_cite = f"<thought>x</thought>\n<action>{prose}.</action>"
    assert not accepts(tokenizer, write_constraint(Limits(), KEYS), no_cite)
    assert accepts(tokenizer, write_constraint(Limits(), []), no_cite)
    nop = '<thought>enough</thought>\n<action>{"name": "nop"}</action>'
    assert accepts(tokenizer, extend_constraint(Limits(), ["section-1"]), nop)
    assert not accepts(tokenizer, extend_constraint(Limits(), ["section-1"], allow_nop=False), nop)


@pytest.mark.parametrize("cited", [True, False])
def test_hook_ends_a_long_write_well_formed_at_the_token_limit(tokenizer, cited):
    """Greedy decoding on logits that always prefer another word: near the limit the hook forces the
    first closer the grammar accepts (the closing tag, or a citation and then the tag), so the answer
    parses and validates."""
    hf, vocab, eos, lt, pieces = tokenizer
    start = "<thought>use it</thought>\n<action>Solar power grew quickly in many places and "
    prefix = encode_mid_text(tokenizer, start + ("\\cite{textid1} and" if cited else "markets"))
    limit = len(prefix) + 25
    closers = [encode_mid_text(tokenizer, text) for text in ("</action>", " \\cite{textid1}.</action>")]
    hook = GrammarHook(
        lt, write_constraint(Limits(), ["textid1"]).lark, vocab_size=vocab, max_new_tokens=limit, closers=closers
    )
    words = torch.tensor([2.0 if p.strip().isalpha() else 0.0 for p in pieces])
    out = list(prefix)
    while len(out) < limit:
        token = int(torch.argmax(hook(out, words.clone())))
        if token in eos:
            break
        out.append(token)
    text = hf.decode(out)
    assert text.endswith("\\cite{textid1}.</action>" if not cited else "</action>"), text[-80:]
    assert validate_write(parse_response(text).action, Limits(), QUESTION, {"textid1"}).content


def test_mask_is_fast_enough(tokenizer):
    """A few hundred microseconds a token on a 2-core CPU; generous bound against a loaded machine."""
    hf, vocab, eos, lt, _ = tokenizer
    hook = GrammarHook(lt, write_constraint(Limits(), KEYS).lark, vocab_size=vocab, max_new_tokens=400)
    ids = encode_mid_text(
        tokenizer,
        "<thought>"
        + "plan " * 20
        + "</thought>\n<action>"
        + "Solar power grew quickly. " * 6
        + "\\cite{textid1}</action>",
    )
    for i in range(len(ids)):
        hook(ids[:i], torch.zeros(vocab))
    assert hook.error is None
    assert hook.mask_seconds / hook.masks < 0.01
