"""The in-process generator's device path on the real SmolLM2 with a real WRITE grammar: the grammar applied by the
generation itself picks what the host logits hook picks, and exact prompt-lookup speculation changes nothing the
engine receives (greedy), or stays within the grammar (sampled, drafts rejected and the matcher rolled back)."""

from __future__ import annotations

from dataclasses import replace
from importlib.resources import files

import llguidance
import pytest

from sala_report.app.warp.decoding import Decoding, GrammarHook
from sala_report.app.warp.generator import GenRequest, LocalGenerator
from sala_report.app.warp.grammar import write_constraint
from sala_report.app.warp.validate import Limits
from sala_report.model import GenerationConfig, generate

pytestmark = pytest.mark.slow
CLOSERS = ("</action>", " \\cite{textid1}.</action>")


@pytest.fixture(scope="module")
def local():
    return LocalGenerator.load("smollm2-135m", device="cpu", dtype="float32", draft_tokens=0)


def write_request(max_tokens: int, **kw) -> GenRequest:
    """A WRITE whose answer copies its evidence (as reports quote passages): drafts from the prompt get accepted."""
    doc = (files("sala_report.assets") / "demo" / "corpus" / "cold-climate-performance.md").read_text("utf-8")
    evidence = " ".join(doc.split())[:400]
    prompt = (
        f"Evidence [textid1]: {evidence}\n\nWrite one paragraph of the section 'Cold-climate performance' from "
        "the evidence, quoting it, as <thought>...</thought><action>...</action>, citing \\cite{textid1}."
    )
    constraint = write_constraint(Limits(thought_chars=60), ["textid1"])
    return GenRequest("", prompt, constraint, max_tokens, top_p=0.8, closers=CLOSERS, **kw)


def run(local: LocalGenerator, request: GenRequest, draft_tokens: int):
    local._draft_tokens = draft_tokens
    deltas: list[str] = []
    before = (local.drafted, local.accepted)
    result = local.generate(request, on_delta=deltas.append)
    return result, "".join(deltas), local.drafted - before[0], local.accepted - before[1]


@pytest.mark.parametrize(("temperature", "seed"), [(0.0, None), (0.7, 3)])
def test_grammar_on_the_device_picks_what_the_host_hook_picks(local, temperature, seed):
    """Masks computed per position and applied by the generation (on a runtime) give the tokens the host hook gives
    (plain forward calls), closers and early closing included: the same ids, the same random draws."""
    request = write_request(48, temperature=temperature, seed=seed, decoding=Decoding(close_early=True))
    tok = local.tok
    local._classes()
    hook = GrammarHook(
        _lt(local),
        request.constraint.lark,
        vocab_size=tok.vocab_size,
        max_new_tokens=request.max_tokens,
        closers=[tok.encode(c) for c in CLOSERS],
        stop_tokens=local._stop_tokens,
    )
    config = GenerationConfig(max_new_tokens=48, temperature=temperature, top_p=0.8, seed=seed)
    host = generate(local.lm, tok, local.prompt_ids(request), config, logits_hook=hook)
    list(host)
    result, streamed, _, _ = run(local, request, 0)
    assert result.text == streamed == host.text and result.completion_tokens == host.completion_tokens
    assert temperature or host.text.endswith("</action>")  # greedily, the closer was forced at the limit


def _lt(local: LocalGenerator):
    from sala_report.app.warp.decoding import ll_tokenizer

    return ll_tokenizer(local.tok.hf, vocab_size=local.tok.vocab_size, eos_token_ids=local.tok.eos_token_ids)


def test_speculation_keeps_the_greedy_answer(local):
    request = write_request(60, temperature=0.0)
    plain, plain_streamed, _, _ = run(local, request, 0)
    fast, fast_streamed, drafted, accepted = run(local, request, 8)
    assert replace(fast, seconds=0) == replace(plain, seconds=0) and fast_streamed == plain_streamed
    assert drafted > accepted > 5  # drafts were kept, and some rejected (rolled back)


def test_sampled_speculation_stays_in_the_grammar(local):
    """The accept/resample rule keeps sampling exact (speculate.py's tests); here: every answer is one the grammar
    accepts, which it would not be if the matcher kept a rejected draft."""
    lt = _lt(local)
    for seed in (0, 1):
        request = write_request(60, temperature=0.7, seed=seed)
        result, _, drafted, accepted = run(local, request, 8)
        assert drafted > accepted > 0
        matcher = llguidance.LLMatcher(lt, llguidance.LLMatcher.grammar_from_lark(request.constraint.lark))
        ids = local.tok.encode(result.text)
        assert matcher.try_consume_tokens(ids) == len(ids) and matcher.is_accepting(), result.text


def test_calls_share_one_runtime(local):
    """Speculation needs the runtime's rollback, so on a CPU it runs on one (a GPU always does): made once, reused."""
    request = write_request(8, temperature=0.0)
    run(local, request, 8)
    run(local, replace(request, prompt=request.prompt[:300]), 8)
    assert local.runtime.created == 1
