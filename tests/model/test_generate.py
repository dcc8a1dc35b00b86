"""Generation: stops, streaming that never splits a character, cancellation, the logits hook, sampling knobs."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest
import torch

from sala_report.model import GenerationConfig, generate
from sala_report.model.generate import penalise, sample


class ScriptedLM:
    """A fake model with the real calling convention: each call's last logits put the next id of `script` on top.
    `logits` gives the base scores instead when set (for sampling tests)."""

    def __init__(self, script: list[int], vocab: int, logits: torch.Tensor | None = None):
        self.script, self.vocab, self.base = script, vocab, logits
        self.calls: list[int] = []  # tokens fed per call
        self.lm_head = SimpleNamespace(weight=torch.zeros(1))

    def new_cache(self, batch_size: int = 1, *, capacity: int = 256):
        return SimpleNamespace(length=0, batch_size=batch_size)

    def __call__(self, ids, cache=None, *, last_only=False):
        self.calls.append(ids.shape[1])
        cache.length += ids.shape[1]
        step = len(self.calls) - 1
        out = torch.full((1, 1, self.vocab), -10.0) if self.base is None else self.base.clone().view(1, 1, -1)
        if self.base is None:
            out[0, 0, self.script[min(step, len(self.script) - 1)]] = 10.0
        return out


@pytest.fixture
def script(smollm2_tok):
    def make(text: str, *extra_ids: int) -> ScriptedLM:
        return ScriptedLM(smollm2_tok.encode(text) + list(extra_ids), smollm2_tok.vocab_size)

    return make


def _run(lm, tok, config, **kw):
    gen = generate(lm, tok, [1, 2, 3], config, **kw)
    deltas = list(gen)
    return gen, deltas


def test_streaming_never_splits_a_character(script, smollm2_tok):
    text = "Graphs 📈🧪 and 深度 research ✅"
    lm = script(text, 2)
    ids = smollm2_tok.encode(text)
    assert len(ids) > len(text.split()) + 6  # the emoji are split over several byte tokens
    gen, deltas = _run(lm, smollm2_tok, GenerationConfig(temperature=0))
    assert "".join(deltas) == gen.text == text
    assert all("\ufffd" not in d for d in deltas) and all(deltas)
    assert gen.finish_reason == "stop" and gen.token_ids == ids and 2 not in gen.token_ids
    assert gen.prompt_tokens == 3 and gen.completion_tokens == len(ids) and gen.seconds > 0
    assert lm.calls == [3] + [1] * len(ids)  # one prefill, then one token per step


def test_stop_string_across_tokens_is_cut_and_never_streamed(script, smollm2_tok):
    lm = script("The answer is 42.\nEND_OF_ANSWER and more text", 2)
    gen, deltas = _run(lm, smollm2_tok, GenerationConfig(temperature=0, stop_strings=("END_OF_ANSWER", "zzz")))
    assert gen.text == "The answer is 42.\n" and "".join(deltas) == gen.text
    assert gen.finish_reason == "stop"
    assert not any("END" in d for d in deltas)


def test_held_back_prefix_is_released_when_it_is_not_a_stop(script, smollm2_tok):
    lm = script("a b c ST", 2)
    gen, deltas = _run(lm, smollm2_tok, GenerationConfig(temperature=0, stop_strings=("STOP",)))
    assert gen.text == "a b c ST" and "".join(deltas) == gen.text and gen.finish_reason == "stop"


def test_stop_token_ids_and_max_new_tokens(script, smollm2_tok):
    lm = script("one two three four five six")
    word = smollm2_tok.encode(" three")[0]
    gen, _ = _run(lm, smollm2_tok, GenerationConfig(temperature=0, stop_token_ids=[word]))
    assert gen.text == "one two" and gen.finish_reason == "stop"
    gen, _ = _run(script("one two three four five six"), smollm2_tok, GenerationConfig(temperature=0, max_new_tokens=3))
    assert gen.completion_tokens == 3 and gen.finish_reason == "length" and gen.text == "one two three"
    lm = script("one")
    gen, deltas = _run(lm, smollm2_tok, GenerationConfig(max_new_tokens=0))
    assert deltas == [] and gen.finish_reason == "length" and lm.calls == []


def test_cancel_between_tokens(script, smollm2_tok):
    lm = script("one two three four five six seven eight", 2)
    cancel = threading.Event()
    gen = generate(lm, smollm2_tok, [1], GenerationConfig(temperature=0), cancel=cancel)
    got = []
    for delta in gen:
        got.append(delta)
        if len(got) == 2:
            cancel.set()
    assert gen.finish_reason == "cancelled" and gen.completion_tokens == 2 and gen.text == "one two"
    assert len(lm.calls) == 2  # prefill and one step: no model call after the cancel
    cancel2 = threading.Event()
    cancel2.set()
    gen = generate(script("x"), smollm2_tok, [1], GenerationConfig(), cancel=cancel2)
    assert list(gen) == [] and gen.finish_reason == "cancelled"


def test_logits_hook_sees_generated_ids_and_constrains(script, smollm2_tok):
    lm = script("free text the model wants", 2)
    allowed = smollm2_tok.encode(" yes")[0]
    seen = []

    def hook(generated, logits):
        seen.append(list(generated))
        assert logits.dtype == torch.float32 and logits.shape == (smollm2_tok.vocab_size,)
        masked = torch.full_like(logits, float("-inf"))
        masked[allowed] = 0.0
        return masked

    gen, _ = _run(lm, smollm2_tok, GenerationConfig(temperature=0.9, max_new_tokens=4, seed=1), logits_hook=hook)
    assert gen.token_ids == [allowed] * 4
    assert seen == [[], [allowed], [allowed] * 2, [allowed] * 3]


def test_seeded_sampling_is_reproducible_and_knobs_narrow_it():
    torch.manual_seed(0)
    logits = torch.randn(50) * 2
    draw = lambda cfg, seed: [sample(logits, cfg, torch.Generator().manual_seed(seed)) for _ in range(1)][0]  # noqa: E731
    cfg = GenerationConfig(temperature=1.0, seed=5)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert [sample(logits, cfg, g1) for _ in range(20)] == [sample(logits, cfg, g2) for _ in range(20)]
    best = int(logits.argmax())
    assert {draw(GenerationConfig(temperature=1.0, top_k=1), s) for s in range(20)} == {best}
    assert {draw(GenerationConfig(temperature=1.0, top_p=1e-6), s) for s in range(20)} == {best}
    top3 = set(torch.topk(logits, 3).indices.tolist())
    assert {draw(GenerationConfig(temperature=5.0, top_k=3), s) for s in range(200)} == top3
    assert sample(logits, GenerationConfig(temperature=0), None) == best


def test_repetition_penalty_like_transformers():
    logits = torch.tensor([2.0, -1.0, 1.5, 0.5])
    out = penalise(logits, torch.tensor([0, 1, 1]), 2.0)
    assert out.tolist() == [1.0, -2.0, 1.5, 0.5]
    base = torch.tensor([3.0, 2.9, 0.0, -1.0])
    lm = ScriptedLM([], 4, logits=base)
    tok = SimpleNamespace(
        eos_token_ids=[], decode=lambda ids, skip_special_tokens=False: "".join("abcd"[i] for i in ids)
    )
    gen = generate(lm, tok, [3], GenerationConfig(temperature=0, max_new_tokens=3, repetition_penalty=1.5))
    # a: 3 -> 2 once seen, b: 2.9 -> 1.93; the penalty applies once per distinct id, as in transformers
    assert "".join(gen) == "aba"


def test_real_model_seeded_sampling(smollm2, smollm2_tok):
    ids = smollm2_tok.encode(smollm2_tok.apply_chat_template([{"role": "user", "content": "Say something."}]))
    cfg = GenerationConfig(max_new_tokens=5, temperature=0.8, top_p=0.9, top_k=40, repetition_penalty=1.1, seed=3)
    a = generate(smollm2, smollm2_tok, ids, cfg)
    b = generate(smollm2, smollm2_tok, ids, cfg)
    assert "".join(a) == "".join(b) and a.token_ids == b.token_ids and a.completion_tokens > 0


def test_bad_config_values():
    with pytest.raises(ValueError, match="top_p"):
        GenerationConfig(top_p=0)
    with pytest.raises(ValueError, match="temperature"):
        GenerationConfig(temperature=-1)
