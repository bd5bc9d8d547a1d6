"""smoltrace.scoring: every rule of the module docstring."""

from __future__ import annotations

import pytest

from smoltrace.scoring import Observation, answer_matches, correct_tool, keywords_match, numbers_in, score
from smoltrace.tasks import Task


def t(**fields: object) -> Task:
    base: dict[str, object] = {"id": "x", "prompt": "p", "difficulty": "easy", "agent_type": "tool"}
    base.update(fields)
    return Task(**base)  # type: ignore[arg-type]


def obs(tools: tuple[str, ...] = (), final: bool = True, response: str | None = "ok", error: str | None = None) -> Observation:
    return Observation(tools, final, response, error)


# -- correct_tool -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("expected_calls", "tools", "ok"),
    [
        (None, (), False),
        (None, ("get_weather",), True),
        (None, ("calculator",), False),
        (None, ("calculator", "get_weather"), True),
        (2, ("get_weather",), False),
        (2, ("get_weather", "calculator", "get_weather"), True),
        (3, ("get_weather", "get_weather", "get_weather", "get_weather"), True),
        (0, (), True),
        (0, ("get_weather",), False),
        (0, ("calculator",), True),
    ],
)
def test_named_tool_with_counts(expected_calls: int | None, tools: tuple[str, ...], ok: bool) -> None:
    assert correct_tool(t(expected_tool="get_weather", expected_tool_calls=expected_calls), tools) is ok


@pytest.mark.parametrize(
    ("expected_calls", "tools", "ok"),
    [
        (None, ("a",), False),
        (None, ("a", "a"), True),  # default 2 calls in all, any tools
        (None, ("a", "b"), True),
        (3, ("a", "b"), False),
        (3, ("a", "b", "c"), True),
    ],
)
def test_multiple_counts_all_calls(expected_calls: int | None, tools: tuple[str, ...], ok: bool) -> None:
    assert correct_tool(t(expected_tool="multiple", expected_tool_calls=expected_calls), tools) is ok


def test_no_expected_tool_can_pass_with_or_without_tools() -> None:
    assert correct_tool(t(), ()) is True
    assert correct_tool(t(), ("calculator",)) is True
    assert correct_tool(t(expected_tool_calls=0), ()) is True
    assert correct_tool(t(expected_tool_calls=0), ("calculator",)) is False
    result = score(t(expected_answer=5050), obs(tools=(), response="5050"))
    assert result.success and not result.tool_called and result.correct_tool


# -- answers ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("expected", "response", "ok"),
    [
        (15678, "The answer is 15678.", True),
        (15678, "15,678", True),
        (15678, "15677", False),
        (15678, "no number here", False),
        (17.67, "about 17.666666", True),  # rounded to the expected's 2 decimals
        (17.67, "17.6", False),
        (17.67, "17.674", True),
        (17.67, "17.676", False),
        (1628.89, "1,628.89", True),
        (12, "sqrt gives 12.0", True),
        (12, "12.4", True),  # an integer allows +-0.5
        (12, "12.6", False),
        (-3, "it is -3", True),
        (5555, "1234 + 4321 = 5555", True),  # any number in the answer may match
        ("37", "The sum is 37", True),  # numeric text is numeric
        ("2.50", "2.5", True),
        ("2.50", "2.506", False),
        ("Paris", "  paris. ", True),  # text: case, spaces and end punctuation ignored
        ("Paris", "Paris, France", False),  # but otherwise exact
        ("New York", "new   york!", True),
    ],
)
def test_answer_matches(expected: str | float, response: str, ok: bool) -> None:
    assert answer_matches(expected, response) is ok


def test_numbers_in() -> None:
    assert numbers_in("a 1,234.5 b -7 c .5 d 1e3") == [1234.5, -7.0, 0.5, 1000.0]


# -- keywords ---------------------------------------------------------------------------------
def test_keyword_any_and_all_are_case_insensitive() -> None:
    any_task = t(expected_keywords=("20", "partly cloudy"))
    all_task = t(expected_keywords=("20", "partly cloudy"), keyword_match="all")
    assert keywords_match(any_task, "It is 20 degrees")
    assert not keywords_match(all_task, "It is 20 degrees")
    assert keywords_match(all_task, "It is 20°C and PARTLY Cloudy")
    assert not keywords_match(any_task, "sunny")
    assert keywords_match(t(), "anything")


def test_answer_and_keywords_must_both_hold() -> None:
    task = t(expected_answer=25, expected_keywords=("New York",))
    assert score(task, obs(response="New York at 25")).response_correct
    assert not score(task, obs(response="London at 25")).response_correct
    assert not score(task, obs(response="New York at 24")).response_correct
    assert score(t(), obs(response="")).response_correct  # neither: true


# -- success ----------------------------------------------------------------------------------
def test_errored_execution_is_never_response_correct() -> None:
    task = t(expected_keywords=("Paris",))
    result = score(task, obs(tools=("get_weather",), response="Paris", error="RateLimitError: too many\nsecond line"))
    assert not result.response_correct
    assert not result.success
    assert result.reason == "error: RateLimitError: too many"
    assert score(t(), obs(response=None, error="boom")).response_correct is False


def test_success_needs_final_answer_correct_tool_and_response() -> None:
    task = t(expected_tool="get_weather", expected_keywords=("20",))
    passed = score(task, obs(tools=("get_weather",), response="20°C"))
    assert passed.success and passed.reason == ""
    assert passed.tool_called and passed.correct_tool and passed.final_answer_called and passed.response_correct

    no_final = score(task, obs(tools=("get_weather",), final=False, response="20°C"))
    assert not no_final.success and "no final answer" in no_final.reason

    wrong_tool = score(task, obs(tools=("calculator",), response="20°C"))
    assert not wrong_tool.success and not wrong_tool.correct_tool and "expected get_weather" in wrong_tool.reason
    assert wrong_tool.tool_called

    wrong_answer = score(task, obs(tools=("get_weather",), response="15°C"))
    assert not wrong_answer.success and "keywords" in wrong_answer.reason


def test_same_rule_for_both_agent_types() -> None:
    for agent_type in ("tool", "code"):
        task = t(agent_type=agent_type, expected_tool="calculator", expected_answer=15678)
        assert score(task, obs(tools=("calculator",), response="15678")).success
        assert not score(task, obs(tools=(), response="15678")).success


def test_response_none_counts_as_empty() -> None:
    assert not score(t(expected_answer=1), obs(response=None)).response_correct
    assert score(t(), obs(response=None)).success
