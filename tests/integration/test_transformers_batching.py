"""Batched local generation (issue 15): with --parallel-workers N, concurrent calls on the tiny
transformers model are generated as one batch, and each request gets exactly what it would have
got alone (greedy decoding): its own text, its own stop strings and token limit, its own counts."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.runner_fixtures import runner_env_fixture  # noqa: F401 - fixture
from tests.fakes.tiny_model import tiny_model_dir_fixture  # noqa: F401 - fixture

pytestmark = pytest.mark.usefixtures("runner_env")

SCALE = 6.0
# a system prompt all requests share, as agents of one type do: long enough to be cached once
SYSTEM = "You are an expert assistant who can solve any task using code blobs and tools. " * 4
PROMPTS = [
    "What's the weather in Paris, France?",
    "The quick brown fox",
    "Thought: I will call the calculator tool. <code>final_answer(42)</code> and then the weather in Paris",
    "0123456789 + - * / ( ) = ? !",
]


def build(model_dir: Path, workers: int) -> Any:
    from smoltrace.models import ModelSpec, RetryPolicy, build_model

    spec = ModelSpec("transformers", str(model_dir), model_args={"max_new_tokens": 24}, parallel_workers=workers)
    model = build_model(spec, RetryPolicy(max_retries=0))
    # random weights at their init scale barely look at the context; scaled up, every token of
    # the prompt (and any padding that leaked into attention) changes what comes out
    import torch

    with torch.no_grad():
        for name, param in model.model.named_parameters():
            if "norm" not in name:
                param.mul_(SCALE)
    return model


def call(model: Any, prompt: str, stops: list[str] | None, max_new: int) -> tuple[str, int, int]:
    messages = [
        {"role": "system", "content": [{"type": "text", "text": SYSTEM}]},
        {"role": "user", "content": [{"type": "text", "text": prompt}]},
    ]
    reply = model.generate(messages, stop_sequences=stops, max_new_tokens=max_new)
    return reply.content, reply.token_usage.input_tokens, reply.token_usage.output_tokens


def requests_for(model: Any) -> list[tuple[str, list[str] | None, int]]:
    """Different prompts, token limits, and stop strings taken from the middle of real outputs
    (so that they do stop the generation early)."""
    out: list[tuple[str, list[str] | None, int]] = []
    for i, prompt in enumerate(PROMPTS):
        text, _, _ = call(model, prompt, None, 24)
        out.append((prompt, None, 24 - 3 * i))
        if len(text) > 8:
            out.append((prompt, [text[5:8]], 24))
    return out


def test_batched_output_equals_unbatched_greedy_output_per_request(tiny_model_dir: Path) -> None:
    alone = build(tiny_model_dir, 1)
    requests = requests_for(alone)
    expected = [call(alone, *r) for r in requests]
    assert any(r[1] for r in requests), "no stop string was exercised"
    assert any(e[2] < r[2] for e, r in zip(expected, requests, strict=True)), "no request stopped early"

    batched = build(tiny_model_dir, 8)
    batcher = batched.model.generate
    barrier = threading.Barrier(len(requests))
    got: list[Any] = [None] * len(requests)

    def worker(i: int) -> None:
        barrier.wait()
        got[i] = call(batched, *requests[i])

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(requests))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert got == expected
    assert max(batcher.batches) > 1, batcher.batches  # they really were generated together
    assert sum(batcher.batches) == len(requests)
    assert batcher._prefixes, "the shared system prompt was not cached"


def test_one_worker_keeps_the_plain_locked_generate(tiny_model_dir: Path) -> None:
    from smoltrace.batching import GenerateBatcher

    model = build(tiny_model_dir, 1)
    assert not isinstance(model.model.generate, GenerateBatcher)


def test_a_failing_batch_fails_each_of_its_calls(tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = build(tiny_model_dir, 4)
    batcher = model.model.generate

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("out of memory")

    monkeypatch.setattr(batcher, "_generate", boom)
    errors: list[str] = []

    def worker() -> None:
        try:
            call(model, PROMPTS[0], None, 8)
        except RuntimeError as err:
            errors.append(str(err))

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == ["out of memory"] * 3


def test_a_transformers_that_refuses_the_prompt_cache_still_batches(tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """transformers 5.17 (seen on the lent H200) rejects the shared prompt's KV cache under the
    name 5.24 uses: every batched call failed. Now the batch runs again without it, gives what
    each request would have got alone, and prefix caching stays off."""
    alone = build(tiny_model_dir, 1)
    requests = [(p, None, 12) for p in PROMPTS]
    expected = [call(alone, *r) for r in requests]

    batched = build(tiny_model_dir, 8)
    batcher = batched.model.generate
    real = batcher._generate
    refused: list[str] = []

    def old_generate(*args: Any, **kwargs: Any) -> Any:
        names = [k for k in ("cache", "past_key_values") if k in kwargs]
        if names:
            refused.append(names[0])
            raise ValueError(f"The following `model_kwargs` are not used by the model: {names}")
        return real(*args, **kwargs)

    monkeypatch.setattr(batcher, "_generate", old_generate)
    barrier = threading.Barrier(len(requests))
    got: list[Any] = [None] * len(requests)

    def worker(i: int) -> None:
        barrier.wait()
        got[i] = call(batched, *requests[i])

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(requests))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert got == expected
    assert refused, "the prompt cache was never offered"
    assert batcher._prefill is None and not batcher._prefixes
