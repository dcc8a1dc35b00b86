"""A grammar given to generate() as bitmasks, written here by hand (no grammar library): on a runtime (CUDA graphs on
a GPU) the generation masks on the device and picks what the same rule as a host logits hook picks, and prompt-lookup
speculation verifies drafts in one pass without changing the greedy answer."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from sala_report.model import GenerationConfig, generate, load_model
from sala_report.model.generate import RuntimeSlot

EOS = 2


class LetterTokenizer:
    """A fake with the Tokenizer calls generate() makes: id i is one letter."""

    eos_token_ids = [EOS]

    def decode(self, ids, skip_special_tokens=False):
        return "".join(chr(65 + i % 26) for i in ids)


class Choice:
    """The answer is one of `options` (token id lists), then EOS: a prefix rule, as bitmasks by integer arithmetic."""

    needs_top = False

    def __init__(self, options: list[list[int]], vocab: int):
        self.options, self.words = options, (vocab + 31) // 32
        self.calls = 0

    def allowed(self, prefix: list[int]) -> set[int]:
        live = [o for o in self.options if o[: len(prefix)] == prefix]
        out = {o[len(prefix)] for o in live if len(o) > len(prefix)}
        return out | ({EOS} if any(len(o) == len(prefix) for o in live) else set())

    def bitmasks(self, generated_ids, drafts=()):
        self.calls += 1
        rows = np.zeros((len(drafts) + 1, self.words), dtype=np.uint32)
        for i in range(len(drafts) + 1):
            for t in self.allowed(list(generated_ids) + list(drafts[:i])):
                rows[i, t // 32] |= np.uint32(1 << (t % 32))
        return rows.view(np.int32)

    def override(self, generated_ids, top, allowed):
        return None

    def valid_drafts(self, generated_ids, drafts):
        n = 0
        while n < len(drafts) and drafts[n] in self.allowed(list(generated_ids) + drafts[:n]):
            n += 1
        return drafts[:n]

    def hook(self, generated_ids, logits):
        mask = torch.full_like(logits, float("-inf"))
        mask[sorted(self.allowed(list(generated_ids)))] = 0.0
        return logits + mask


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def sala(request, checkpoint, tiny_config):
    """The tiny SALA model; 16 query heads over 2 KV heads, so the GPU's selection tiles have their shapes at scale."""
    if request.param == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    config = tiny_config("sala")
    config.update(num_attention_heads=16, lightning_nh=16, lightning_nkv=16)
    dtype = torch.float32 if request.param == "cpu" else torch.bfloat16
    return load_model(checkpoint(config), device=request.param, dtype=dtype)


def test_device_masks_and_speculation_keep_the_answer(sala):
    rnd = random.Random(0)
    stem = [rnd.randrange(3, 128) for _ in range(6)]
    options = [stem + [rnd.randrange(3, 128) for _ in range(40)] for _ in range(3)]  # a choice after a shared start
    prompt = [rnd.randrange(3, 128) for _ in range(1060)] + options[1] + options[2]  # InfLLM-V2 sparse from 1024
    config = GenerationConfig(max_new_tokens=60, temperature=0)
    grammar = Choice(options, 128)
    host = generate(sala, LetterTokenizer(), prompt, config, logits_hook=grammar.hook)
    list(host)
    slot = RuntimeSlot(sala)
    device = generate(sala, LetterTokenizer(), prompt, config, grammar=grammar, runtime=slot)
    list(device)
    fast = generate(sala, LetterTokenizer(), prompt, config, grammar=grammar, runtime=slot, draft_tokens=8)
    list(fast)
    assert host.token_ids in options and host.finish_reason == "stop"
    assert device.token_ids == host.token_ids and fast.token_ids == host.token_ids and fast.finish_reason == "stop"
    assert fast.accepted >= 20 and fast.drafted > 0  # the chosen option is drafted from the prompt and kept
    assert slot.created == 1
