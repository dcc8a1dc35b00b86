"""Tokenizers from checkpoint folders and chat templates: sources of the template, EOS ids, thinking on/off."""

from __future__ import annotations

import json

import pytest
from tokenizers import AddedToken, Tokenizer

from sala_report.model import ModelError, load_tokenizer

# A MiniCPM4.1-style ChatML template that handles enable_thinking itself.
THINKING_TEMPLATE = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
    "{% if enable_thinking is defined and enable_thinking is false %}{{ '<think>\\n\\n</think>\\n\\n' }}{% endif %}"
    "{% endif %}"
)
PLAIN_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]


@pytest.fixture
def folder(tmp_path, smollm2_tok):
    """A checkpoint folder's tokenizer files: tokenizer.json (SmolLM2's vocab plus <think> tokens), config files."""
    hf = Tokenizer.from_str(smollm2_tok.hf.to_str())  # a copy: the session's tokenizer stays as loaded
    hf.add_special_tokens([AddedToken("<think>", special=True), AddedToken("</think>", special=True)])
    hf.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text(
        json.dumps(
            {"bos_token": {"content": "<|im_start|>"}, "eos_token": "<|im_end|>", "chat_template": PLAIN_TEMPLATE}
        )
    )
    (tmp_path / "config.json").write_text(json.dumps({"vocab_size": 49280, "eos_token_id": [2, 0]}))
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": 2}))
    return tmp_path


def test_folder_tokenizer_reads_template_eos_and_vocab(folder):
    tok = load_tokenizer(folder)
    assert tok.eos_token_ids == [2, 0] and tok.vocab_size == 49280
    assert tok.encode("<think>") == [tok.token_id("<think>")]
    text = tok.apply_chat_template(MESSAGES)
    assert (
        text
        == "<|im_start|><|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )
    assert tok.apply_chat_template(MESSAGES, add_generation_prompt=False).endswith("Hi<|im_end|>\n")


def test_chat_template_jinja_file_wins(folder):
    (folder / "chat_template.jinja").write_text(THINKING_TEMPLATE)
    tok = load_tokenizer(folder)
    assert tok.apply_chat_template(MESSAGES).startswith("<|im_start|>system")


def test_thinking_switch_in_a_template_that_handles_it(folder):
    (folder / "chat_template.jinja").write_text(THINKING_TEMPLATE)
    tok = load_tokenizer(folder)
    assert tok.apply_chat_template(MESSAGES, enable_thinking=False).endswith("assistant\n<think>\n\n</think>\n\n")
    assert tok.apply_chat_template(MESSAGES, enable_thinking=True).endswith("assistant\n")
    assert tok.apply_chat_template(MESSAGES).endswith("assistant\n")


def test_thinking_off_prefills_an_empty_think_block_for_templates_without_the_switch(folder, smollm2_tok):
    tok = load_tokenizer(folder)
    assert tok.apply_chat_template(MESSAGES, enable_thinking=False).endswith("assistant\n<think>\n\n</think>\n\n")
    assert tok.apply_chat_template(MESSAGES, enable_thinking=True).endswith("assistant\n")
    # a model without <think> in its vocabulary is not a reasoning model: nothing to switch off
    assert smollm2_tok.apply_chat_template(MESSAGES, enable_thinking=False).endswith("assistant\n")


def test_named_templates_list(folder):
    cfg = json.loads((folder / "tokenizer_config.json").read_text())
    cfg["chat_template"] = [
        {"name": "tool_use", "template": "TOOLS"},
        {"name": "default", "template": THINKING_TEMPLATE},
    ]
    (folder / "tokenizer_config.json").write_text(json.dumps(cfg))
    assert load_tokenizer(folder).apply_chat_template(MESSAGES).startswith("<|im_start|>system")


def test_template_raise_exception_and_tojson(folder):
    (folder / "chat_template.jinja").write_text(
        "{% if messages[0]['role'] != 'user' %}{{ raise_exception('first message must be user') }}{% endif %}"
        "{{ messages | tojson }}"
    )
    tok = load_tokenizer(folder)
    assert tok.apply_chat_template([{"role": "user", "content": "é"}]) == '[{"role": "user", "content": "é"}]'
    with pytest.raises(Exception, match="first message must be user"):
        tok.apply_chat_template(MESSAGES)


def test_missing_tokenizer_or_template(tmp_path, folder):
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "config.json").write_text("{}")
    with pytest.raises(ModelError, match="no tokenizer.json"):
        load_tokenizer(bare)
    (folder / "tokenizer_config.json").write_text("{}")
    with pytest.raises(ModelError, match="no chat template"):
        load_tokenizer(folder).apply_chat_template(MESSAGES)
