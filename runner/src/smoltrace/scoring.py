"""Scoring: whether a task execution succeeded, and why. Pure functions over typed records.

Rules (the README's "Scoring" section says the same):
- `tools_used`: the tools that really ran, in order, `final_answer` excluded. ToolCallingAgent: the
  tool calls in the agent's memory steps. CodeAgent: the tools the executed code invoked (recorded
  by the tools themselves — smolagents' memory only holds the code).
- `tool_called`: at least one tool ran.
- `correct_tool`: `expected_tool` a name → it ran at least `expected_tool_calls` times (default 1;
  0 means it must not run). `"multiple"` → at least `expected_tool_calls` tool calls in all
  (default 2). No `expected_tool` → true, unless `expected_tool_calls` is 0 and some tool ran.
  So a task that needs no tool can pass.
- `final_answer_called`: the agent gave its answer through `final_answer` within its step budget
  (an answer forced after max steps does not count).
- `response_correct`: `expected_answer` (numbers: any number in the answer equal to it after
  rounding to its decimals; text: equal ignoring case, spaces and end punctuation) and
  `expected_keywords` (case-insensitive substrings; `keyword_match` any|all, default any) must all
  hold; with neither, true. An errored execution is never `response_correct`.
- `success`: no error, `final_answer_called`, `correct_tool` and `response_correct` — the same rule
  for both agent types.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from .tasks import Task

DEFAULT_MULTIPLE_CALLS = 2
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:[eE][-+]?\d+)?|-?\.\d+")


@dataclass(frozen=True, slots=True)
class Observation:
    """What an execution did, as read from the agent."""

    tools_used: tuple[str, ...]
    final_answer_called: bool
    response: str | None
    error: str | None


@dataclass(frozen=True, slots=True)
class Score:
    tool_called: bool
    correct_tool: bool
    final_answer_called: bool
    response_correct: bool
    success: bool
    reason: str  # why it failed, "" when it passed


def correct_tool(task: Task, tools_used: Sequence[str]) -> bool:
    expected, calls = task.expected_tool, task.expected_tool_calls
    if expected is None:
        return not (calls == 0 and tools_used)
    if expected == "multiple":
        return len(tools_used) >= (calls if calls is not None else DEFAULT_MULTIPLE_CALLS)
    count = sum(1 for t in tools_used if t == expected)
    if calls == 0:
        return count == 0
    return count >= (calls if calls is not None else 1)


def _decimals(value: float | int) -> int:
    if isinstance(value, int):
        return 0
    text = repr(value)
    return len(text.split(".")[1]) if "." in text and "e" not in text else 6


def numbers_in(text: str) -> list[float]:
    out = []
    for match in _NUMBER.findall(text):
        try:
            out.append(float(match.replace(",", "")))
        except ValueError:
            continue
    return out


def _normalise(text: str) -> str:
    return " ".join(text.casefold().split()).strip(" .!?;:\"'`")


def answer_matches(expected: str | int | float, response: str) -> bool:
    number: float | None
    if isinstance(expected, int | float):
        number = float(expected)
    else:
        try:
            number = float(expected.replace(",", ""))
        except ValueError:
            number = None
    if number is not None and math.isfinite(number):
        decimals = _decimals(expected) if isinstance(expected, int | float) else len(expected.split(".")[1]) if "." in expected else 0
        tolerance = 0.5 * 10**-decimals + 1e-9
        return any(abs(n - number) <= tolerance for n in numbers_in(response))
    return _normalise(response) == _normalise(str(expected))


def keywords_match(task: Task, response: str) -> bool:
    if not task.expected_keywords:
        return True
    text = response.casefold()
    hits = [k.casefold() in text for k in task.expected_keywords]
    return all(hits) if task.keyword_match == "all" else any(hits)


def score(task: Task, obs: Observation) -> Score:
    tool_called = bool(obs.tools_used)
    tool_ok = correct_tool(task, obs.tools_used)
    if obs.error is not None:
        return Score(tool_called, tool_ok, obs.final_answer_called, False, False, f"error: {obs.error.splitlines()[0][:200]}")
    response = obs.response or ""
    answer_ok = task.expected_answer is None or answer_matches(task.expected_answer, response)
    keywords_ok = keywords_match(task, response)
    response_ok = answer_ok and keywords_ok
    success = obs.final_answer_called and tool_ok and response_ok
    reasons = []
    if not obs.final_answer_called:
        reasons.append("no final answer within the step budget")
    if not tool_ok:
        want = task.expected_tool or "no tool"
        reasons.append(
            f"expected {want} x{task.expected_tool_calls if task.expected_tool_calls is not None else '1+'}, ran {list(obs.tools_used)}"
        )
    if not answer_ok:
        reasons.append(f"answer does not match {task.expected_answer!r}")
    if not keywords_ok:
        reasons.append(f"keywords ({task.keyword_match}) {list(task.expected_keywords)} not found")
    return Score(tool_called, tool_ok, obs.final_answer_called, response_ok, success, "; ".join(reasons))
