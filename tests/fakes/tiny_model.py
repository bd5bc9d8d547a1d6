"""A tiny random-weight Llama model for `--provider transformers` tests, built locally (no network).

`build_tiny_model(folder)` trains a byte-level BPE tokenizer on a few strings, wraps it in a
`PreTrainedTokenizerFast` with a ChatML chat template, saves a 2-layer `LlamaForCausalLM` with
random weights next to it and returns the folder. It takes a few seconds, so the `tiny_model_dir`
fixture caches it beside pytest's temp folders, keyed by the transformers/tokenizers versions.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}{% if part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}"
    "{{ '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_CORPUS = [
    "What's the weather in Paris, France?",
    "Thought: I will call the calculator tool. <code>final_answer(42)</code>",
    'Action: {"name": "get_weather", "arguments": {"location": "Paris, France"}}',
    "The quick brown fox jumps over the lazy dog 0123456789 + - * / ( ) = ? !",
]
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def build_tiny_model(folder: Path) -> Path:
    """Build (or reuse) the tiny model in `folder`; returns the folder."""
    if (folder / "config.json").is_file() and (folder / "tokenizer.json").is_file():
        return folder
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    raw = Tokenizer(models.BPE(unk_token=None))
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    raw.train_from_iterator(_CORPUS * 4, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=raw,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    tokenizer.save_pretrained(folder)

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=8192,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(folder)
    return folder


def cached_tiny_model(cache_root: Path) -> Path:
    """The tiny model under `cache_root`, built once per library versions and shared by test
    sessions (built in a private folder, then renamed into place, so concurrent sessions are safe)."""
    import tokenizers
    import transformers

    target = cache_root / f"smoltrace-tiny-llama-v1-tf{transformers.__version__}-tok{tokenizers.__version__}"
    if (target / "config.json").is_file() and (target / "tokenizer.json").is_file():
        return target
    cache_root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tiny-llama-", dir=cache_root))
    build_tiny_model(staging / "model")
    try:
        os.rename(staging / "model", target)
    except OSError:  # another session won the race: use its copy
        shutil.rmtree(staging / "model", ignore_errors=True)
    shutil.rmtree(staging, ignore_errors=True)
    return target


@pytest.fixture(scope="session", name="tiny_model_dir")
def tiny_model_dir_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The tiny model folder: built once, kept next to pytest's numbered temp folders."""
    yield cached_tiny_model(tmp_path_factory.getbasetemp().parent)
