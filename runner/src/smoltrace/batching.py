"""Batched local generation: concurrent agents' `generate` calls on one transformers model run
as one batch (`--provider transformers --parallel-workers N`).

smolagents' `TransformersModel.generate` stays as it is (so its instrumentation still makes one
LLM span per call, in the caller's thread): only the underlying `model.generate` of the
transformers model is replaced by a `GenerateBatcher`. A call waits a short collection window
for others, then one caller runs `generate` for everything pending: prompts left-padded with an
attention mask, one stopping criterion that ends each row on its own stop strings, its own
`max_new_tokens` and EOS. Each caller gets back a tensor shaped like an unbatched result (its
own prompt and its own generated tokens), so its text and token counts stay its own.

transformers' continuous batching (`generate_batch`) takes a list of prompts up front and one
generation config for all; agents' calls arrive one at a time with their own stop strings and
token limits, so the micro-batcher is what fits here.

Calls that do not fit a batch (a batch size other than 1, a streamer, stopping criteria other
than smolagents' stop strings, dict outputs) run alone, one at a time, as before.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_WINDOW_S = 0.01
MIN_PREFIX_TOKENS = 64  # shorter shared prompt starts are not worth a cache of their own
MAX_PREFIXES = 4


def _cache_kwarg() -> str:
    """The name `generate` takes a ready KV cache under: `cache` from transformers 5.24 on
    (`past_key_values` deprecated), `past_key_values` before (5.17 rejects `cache`)."""
    try:
        from transformers.generation.utils import ALL_CACHE_NAMES
    except ImportError:
        return "past_key_values"
    return "cache" if "cache" in ALL_CACHE_NAMES else "past_key_values"


_SOLO_KWARGS = ("streamer", "return_dict_in_generate", "output_scores", "output_logits", "num_return_sequences", "num_beams")


@dataclass(eq=False)
class _Request:
    ids: Any  # 1-D LongTensor: the prompt
    stops: tuple[str, ...]
    max_new_tokens: int
    key: str  # the other generation arguments: only requests with the same key share a batch
    kwargs: dict[str, Any]
    done: threading.Event = field(default_factory=threading.Event)
    result: Any = None
    error: BaseException | None = None


class _RowStops:
    """Per-row stopping for a batch: each row ends at its own stop string (checked as smolagents
    does, on the concatenated decoded tokens), its own max_new_tokens, or EOS. Records how many
    tokens each row generated."""

    def __init__(self, requests: Sequence[_Request], prompt_len: int, decode: Callable[[Any], str], eos_ids: set[int]) -> None:
        self.requests = requests
        self.prompt_len = prompt_len
        self.decode = decode
        self.eos_ids = eos_ids
        self.streams = [""] * len(requests)
        self.lengths: list[int | None] = [None] * len(requests)

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        step = input_ids.shape[1] - self.prompt_len
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        last = input_ids[:, -1].tolist()
        for i, request in enumerate(self.requests):
            if self.lengths[i] is not None:
                done[i] = True
                continue
            token = int(last[i])
            finished = token in self.eos_ids or step >= request.max_new_tokens
            if not finished and request.stops:
                self.streams[i] += self.decode(token)
                finished = any(self.streams[i].endswith(s) for s in request.stops)
            if finished:
                self.lengths[i] = step
                done[i] = True
        return done


class GenerateBatcher:
    """Drop-in for a transformers model's `generate` that batches concurrent single-prompt calls."""

    def __init__(
        self,
        generate: Callable[..., Any],
        *,
        pad_token_id: int,
        eos_token_ids: Sequence[int],
        decode: Callable[[Any], str],
        max_batch: int,
        window_s: float = DEFAULT_WINDOW_S,
        prefill: Callable[[Any], Any] | None = None,
    ) -> None:
        self._generate = generate
        self._prefill = prefill  # prompt ids [1, n] -> the model's KV cache for them (shared prefixes)
        self._prefixes: list[tuple[Any, Any]] = []  # (prefix ids, cache), most recently used first
        self._pad = int(pad_token_id)
        self._eos = {int(t) for t in eos_token_ids}
        self._decode = decode
        self.max_batch = max(1, int(max_batch))
        self.window_s = window_s
        self._run_lock = threading.Lock()  # one generate at a time on the model
        self._cond = threading.Condition()
        self._pending: list[_Request] = []
        self.batches: list[int] = []  # the size of every batch run (for tests and the bench)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        request = self._request(args, kwargs)
        if request is None:
            with self._run_lock:
                return self._generate(*args, **kwargs)
        with self._cond:
            self._pending.append(request)
            self._cond.notify_all()
        while not request.done.is_set():
            with self._run_lock:
                if request.done.is_set():
                    break
                self._collect()
                batch = self._take(request)
                self._run(batch)
        if request.error is not None:
            raise request.error
        return request.result

    # -- internals ----------------------------------------------------------------------------
    def _request(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> _Request | None:
        inputs = kwargs.get("inputs", args[0] if args else None)
        if args or inputs is None or getattr(inputs, "ndim", 0) != 2 or inputs.shape[0] != 1:
            return None
        if any(kwargs.get(k) not in (None, False, 1) for k in _SOLO_KWARGS):
            return None
        mask = kwargs.get("attention_mask")
        if mask is not None and not bool(mask.all()):
            return None
        stops: list[str] = []
        for criterion in kwargs.get("stopping_criteria") or []:
            strings = getattr(criterion, "stop_strings", None)
            if strings is None:
                return None  # a criterion we cannot apply per row
            stops.extend(strings)
        rest = {k: v for k, v in kwargs.items() if k not in ("inputs", "attention_mask", "stopping_criteria", "max_new_tokens")}
        try:
            key = repr(sorted(rest.items()))
        except TypeError:
            return None
        max_new = int(kwargs.get("max_new_tokens") or 20)
        return _Request(inputs[0], tuple(stops), max_new, key, rest)

    def _collect(self) -> None:
        """Wait up to the window for more calls to arrive (not when the batch is already full)."""
        deadline = time.monotonic() + self.window_s
        with self._cond:
            while len(self._pending) < self.max_batch:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)

    def _take(self, lead: _Request) -> list[_Request]:
        """The lead request and the pending ones that can share its batch: the same generation
        arguments and, when shared prompt starts are cached, the same start (a tool agent's and a
        code agent's prompts differ from the system prompt on: padded together, the short one
        would pay for the long one's prefill)."""
        with self._cond:
            batch = [lead]
            for r in self._pending:
                if len(batch) >= self.max_batch:
                    break
                if r is lead or r.key != lead.key:
                    continue
                if self._prefill is not None and _common_prefix(lead.ids, r.ids) < MIN_PREFIX_TOKENS:
                    continue
                batch.append(r)
            for r in batch:
                self._pending.remove(r)
        return batch

    def _prefix_for(self, batch: list[_Request]) -> tuple[Any, Any]:
        """The KV cache of the prompt start all rows share (agents of one type share their long
        system prompt): computed once, reused by every later batch that starts the same way."""
        import torch

        if self._prefill is None or "past_key_values" in batch[0].kwargs or "cache" in batch[0].kwargs:
            return None, None
        lead = batch[0].ids
        limit = min(int(r.ids.shape[0]) for r in batch) - 1  # at least one token of each prompt is fed
        common = limit
        for r in batch[1:]:
            common = min(common, _common_prefix(lead[:limit], r.ids))
        best = None
        for index, (ids, cache) in enumerate(self._prefixes):
            n = int(ids.shape[0])
            if n <= common and torch.equal(lead[:n], ids) and (best is None or n > int(best[1][0].shape[0])):
                best = (index, (ids, cache))
        if best is not None and (len(batch) == 1 or 2 * int(best[1][0].shape[0]) >= common):
            self._prefixes.insert(0, self._prefixes.pop(best[0]))
            return best[1]
        if len(batch) < 2 or common < MIN_PREFIX_TOKENS:
            return None, None
        ids = lead[:common].clone()
        cache = self._prefill(ids.unsqueeze(0))
        self._prefixes.insert(0, (ids, cache))
        del self._prefixes[MAX_PREFIXES:]
        return ids, cache

    def _run(self, batch: list[_Request]) -> None:
        import torch
        from transformers import StoppingCriteriaList

        try:
            prefix_ids, cache = self._prefix_for(batch)
            shared = int(prefix_ids.shape[0]) if prefix_ids is not None else 0
            width = shared + max(int(r.ids.shape[0]) - shared for r in batch)
            device = batch[0].ids.device
            inputs = torch.full((len(batch), width), self._pad, dtype=batch[0].ids.dtype, device=device)
            mask = torch.zeros((len(batch), width), dtype=torch.long, device=device)
            for i, r in enumerate(batch):
                # [shared prefix][padding][rest of the prompt]: every prompt ends where generation
                # starts; positions follow the attention mask, so padding changes nothing
                n = int(r.ids.shape[0])
                inputs[i, :shared] = r.ids[:shared]
                mask[i, :shared] = 1
                inputs[i, width - (n - shared) :] = r.ids[shared:]
                mask[i, width - (n - shared) :] = 1
            extra: dict[str, Any] = {}
            if cache is not None:
                batch_cache = copy.deepcopy(cache)
                if len(batch) > 1:
                    batch_cache.batch_repeat_interleave(len(batch))
                extra[_cache_kwarg()] = batch_cache

            def generate(extra: dict[str, Any]) -> tuple[Any, _RowStops]:
                stops = _RowStops(batch, width, self._decode, self._eos)
                out = self._generate(
                    inputs=inputs,
                    attention_mask=mask,
                    max_new_tokens=max(r.max_new_tokens for r in batch),
                    stopping_criteria=StoppingCriteriaList([stops]),
                    pad_token_id=self._pad,
                    **extra,
                    **batch[0].kwargs,
                )
                return out, stops

            try:
                out, stops = generate(extra)
            except Exception:
                if not extra:
                    raise
                # this transformers cannot take the shared prompt's cache (seen on 5.17 with a GPU):
                # the same batch without it, and no prefix caches from now on
                log.warning("batched generation: the shared-prompt KV cache was refused; continuing without it", exc_info=True)
                self._prefill = None
                self._prefixes.clear()
                out, stops = generate({})
            self.batches.append(len(batch))
            generated = out.shape[1] - width
            for i, r in enumerate(batch):
                stop = stops.lengths[i]
                kept = stop if stop is not None else generated
                r.result = torch.cat([r.ids, out[i, width : width + kept]]).unsqueeze(0)
        except BaseException as err:  # noqa: BLE001 - every caller of the batch sees the failure (re-raised there)
            for r in batch:
                r.error = err
        finally:
            for r in batch:
                r.done.set()


def _common_prefix(a: Any, b: Any) -> int:
    """How many leading tokens two 1-D id tensors share."""
    n = min(int(a.shape[0]), int(b.shape[0]))
    return int((a[:n] == b[:n]).int().cumprod(0).sum())


def install_batcher(model: Any, max_batch: int, window_s: float = DEFAULT_WINDOW_S) -> GenerateBatcher | None:
    """Batch the generate calls of a smolagents TransformersModel (text models; None if it cannot)."""
    tokenizer = getattr(model, "tokenizer", None) or getattr(getattr(model, "processor", None), "tokenizer", None)
    hf_model = getattr(model, "model", None)
    if tokenizer is None or hf_model is None or getattr(model, "_is_vlm", False):
        return None
    config = getattr(hf_model, "generation_config", None)
    eos = getattr(config, "eos_token_id", None)
    if eos is None:
        eos = tokenizer.eos_token_id
    eos_ids = [e for e in (eos if isinstance(eos, list | tuple) else [eos]) if e is not None]
    pad = getattr(config, "pad_token_id", None)
    if pad is None:
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (eos_ids[0] if eos_ids else None)
    if pad is None:
        return None
    # the callers now tokenize and decode concurrently: one lock for the (fast, Rust) tokenizer,
    # whose Python wrapper is not safe to share between threads
    tokenizer_lock = threading.RLock()
    for name in ("apply_chat_template", "decode"):
        setattr(tokenizer, name, _locked(getattr(tokenizer, name), tokenizer_lock))

    def decode(token: Any) -> str:
        return tokenizer.decode(token, skip_special_tokens=True)

    def generate(*args: Any, **kwargs: Any) -> Any:  # late-bound: instrumentation patches the class later
        return type(hf_model).generate(hf_model, *args, **kwargs)

    def prefill(ids: Any) -> Any:
        import torch

        with torch.no_grad():
            return hf_model(input_ids=ids, use_cache=True).past_key_values

    batcher = GenerateBatcher(
        generate, pad_token_id=pad, eos_token_ids=eos_ids, decode=decode, max_batch=max_batch, window_s=window_s, prefill=prefill
    )
    hf_model.generate = batcher
    return batcher


def _locked(call: Callable[..., Any], lock: threading.RLock) -> Callable[..., Any]:
    def locked(*args: Any, **kwargs: Any) -> Any:
        with lock:
            return call(*args, **kwargs)

    return locked
