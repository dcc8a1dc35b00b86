"""The embedded default against Hugging Face transformers on the same GGUF: tokens, logits, greedy text.

transformers dequantises the GGUF with its own code (gguf's numpy kernels, its own Q/K un-permutation)
into its own LlamaForCausalLM, so agreement checks our whole loading path, not only the network.
"""

from __future__ import annotations

import pytest
import torch

from sala_report.model import GenerationConfig, generate

transformers = pytest.importorskip("transformers")

TEXT = "Deep research, 深度研究 🔬🧪 — costs $12.50 in 2024!\n\tdone.<|im_end|> Ünïcödé 😀👍🏽"


@pytest.fixture(scope="module")
def hf_tokenizer(smollm2_path):
    return transformers.AutoTokenizer.from_pretrained(smollm2_path.parent, gguf_file=smollm2_path.name)


@pytest.fixture(scope="module")
def hf_model(smollm2_path):
    # from_pretrained(gguf_file=...) also wants `accelerate`; this is the same loading code without it
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    config = transformers.AutoConfig.from_pretrained(smollm2_path.parent, gguf_file=smollm2_path.name)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    tensors = load_gguf_checkpoint(str(smollm2_path), return_tensors=True, model_to_load=model)["tensors"]
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    assert set(missing) <= {"lm_head.weight"} and not unexpected
    model.tie_weights()
    return model.eval()


def test_gguf_facts(smollm2):
    c = smollm2.config
    assert (c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.num_key_value_heads) == (30, 576, 9, 3)
    assert c.rope_theta == 1e5 and c.tie_word_embeddings and c.vocab_size == 49152
    assert smollm2.lm_head.weight is smollm2.model.embed_tokens.weight


def test_token_ids_match_transformers(smollm2_tok, hf_tokenizer):
    ids = smollm2_tok.encode(TEXT)
    assert ids == hf_tokenizer(TEXT, add_special_tokens=False).input_ids
    assert smollm2_tok.decode(ids) == TEXT
    assert 2 in ids  # <|im_end|> is matched as one special token
    assert smollm2_tok.decode(ids, skip_special_tokens=True) == TEXT.replace("<|im_end|>", "")
    assert smollm2_tok.eos_token_ids == [2] and smollm2_tok.vocab_size == 49152


def test_chat_template_matches_transformers(smollm2_tok, hf_tokenizer):
    messages = [{"role": "user", "content": "Name two rivers in 中国."}]
    ours = smollm2_tok.apply_chat_template(messages, add_generation_prompt=True)
    assert ours == hf_tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert ours.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    assert ours.endswith("<|im_start|>assistant\n")


@pytest.mark.slow  # building transformers' model from the GGUF takes ~15 s on 2 cores
def test_logits_match_transformers(smollm2, smollm2_tok, hf_model):
    ids = torch.tensor([smollm2_tok.encode(TEXT)])
    with torch.inference_mode():
        ours, theirs = smollm2(ids), hf_model(ids).logits
    assert ((ours - theirs).abs().max() / theirs.abs().max()).item() < 1e-3
    assert torch.equal(ours.argmax(-1), theirs.argmax(-1))


@pytest.mark.slow
def test_greedy_chat_continuation_matches_transformers(smollm2, smollm2_tok, hf_model):
    prompt = smollm2_tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}])
    ids = smollm2_tok.encode(prompt)
    gen = generate(smollm2, smollm2_tok, ids, GenerationConfig(max_new_tokens=32, temperature=0, stop_token_ids=()))
    text = "".join(gen)
    with torch.inference_mode():
        out = hf_model.generate(
            torch.tensor([ids]),
            max_new_tokens=32,
            do_sample=False,
            eos_token_id=None,
            pad_token_id=2,
            min_new_tokens=32,
        )
    expected = out[0, len(ids) :].tolist()
    assert gen.token_ids == expected and len(expected) == 32
    assert text == smollm2_tok.decode(expected) and gen.finish_reason == "length"
    assert "Paris" in text
