"""smoltrace.tools: the safe calculator, canned weather, the clock, sandboxed file tools."""

from __future__ import annotations

import builtins
import math
from datetime import UTC, datetime
from pathlib import Path

import pytest

from smoltrace.tools import (
    MAX_EXPRESSION_CHARS,
    CalculationError,
    CalculatorTool,
    ListDirectoryTool,
    ReadFileTool,
    SandboxError,
    TimeTool,
    ToolCallLog,
    WeatherTool,
    WriteFileTool,
    calculate,
    default_tools,
    optional_tools,
    resolve_inside,
    weather_for,
)


# -- calculator -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("234 * 67", 15678),
        ("1234 + 4321", 5555),
        ("2 + 3 * 4", 14),
        ("(2 + 3) * 4", 20),
        ("(2 + 3) ** 2 / 5", 5),
        ("2 ^ 10", 1024),
        ("-2 ** 2", -4),
        ("2 ** -1", 0.5),
        ("7 // 2", 3),
        ("7 % 4", 3),
        ("10 / 4", 2.5),
        ("1,000 + 1", 1001),
        ("3 × 4 ÷ 2", 6),  # noqa: RUF001 - the signs users type
        ("sqrt(144)", 12),
        ("abs(-3) + max(1, 5) + min(2, 9) + round(2.6)", 13),
        ("max(1,234, 5)", 1234),
        ("floor(2.7) + ceil(2.1)", 5),
        ("log10(1000)", 3),
        ("round(1000 * 1.05 ** 10, 2)", 1628.89),
        ("0.15 * 240", 36),
        ("20 * 9 / 5 + 32", 68),
    ],
)
def test_calculator_arithmetic(expression: str, value: float) -> None:
    result = calculate(expression)
    assert result == pytest.approx(value)
    if isinstance(value, int) and float(value).is_integer():
        assert isinstance(result, int), "whole results are shown as integers"


def test_calculator_constants_and_float_functions() -> None:
    assert calculate("pi") == pytest.approx(math.pi)
    assert calculate("sin(0) + cos(0) + exp(0) + log(e)") == 3


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("__import__('os').system('echo hacked')", "unsupported"),
        ("os.system", "unsupported"),
        ("x + 1", "unsupported"),
        ("(1).__class__", "unsupported"),
        ("[1, 2]", "unsupported"),
        ("'a' * 3", "only numbers"),
        ("True + 1", "only numbers"),
        ("lambda: 1", "unsupported"),
        ("sqrt(x=4)", "unsupported"),
        ("2 ** 101", "exponent larger"),
        ("9 ** 9 ** 9", "exponent larger"),
        ("10 ** 99 * 10 ** 99", "too large"),
        ("1 / 0", "division by zero"),
        ("sqrt(-1)", "sqrt"),
        ("2 +", "not an arithmetic expression"),
        ("1" * (MAX_EXPRESSION_CHARS + 1), "longer than"),
    ],
)
def test_calculator_rejects_without_eval(expression: str, message: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_eval(*_: object, **__: object) -> None:
        raise AssertionError("eval/exec must never be used")

    monkeypatch.setattr(builtins, "eval", no_eval)
    monkeypatch.setattr(builtins, "exec", no_eval)
    with pytest.raises(CalculationError, match=message):
        calculate(expression)


def test_calculator_tool_formats_and_logs() -> None:
    log = ToolCallLog()
    tool = CalculatorTool(log)
    assert tool(expression="234*67") == "Result: 15678"
    assert tool(expression="import os").startswith("Error calculating:")
    assert log.calls == ["calculator", "calculator"]


# -- weather ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("location", "canned"),
    [
        ("Paris, France", "20°C, Partly Cloudy"),
        ("London, UK", "15°C, Rainy"),
        ("New York, USA", "25°C, Sunny"),
        ("Tokyo, Japan", "18°C, Clear"),
        ("Sydney, Australia", "22°C, Windy"),
        ("paris,france", "20°C, Partly Cloudy"),
        ("  TOKYO ,  JAPAN ", "18°C, Clear"),
        ("Berlin, Germany", "22°C, Clear"),
        ("Paris", "22°C, Clear"),
        ("", "22°C, Clear"),
    ],
)
def test_weather_canned_values(location: str, canned: str) -> None:
    assert weather_for(location) == canned
    log = ToolCallLog()
    assert WeatherTool(log)(location=location) == f"Weather in {location}: {canned}"
    assert log.calls == ["get_weather"]


# -- time -------------------------------------------------------------------------------------
FIXED = datetime(2025, 1, 15, 12, 30, 45, tzinfo=UTC)


@pytest.mark.parametrize(
    ("zone", "expected"),
    [
        ("UTC", "Current time in UTC: 2025-01-15 12:30:45 UTC"),
        ("utc", "Current time in utc: 2025-01-15 12:30:45 UTC"),
        ("GMT", "Current time in GMT: 2025-01-15 12:30:45 UTC"),
        ("Asia/Tokyo", "Current time in Asia/Tokyo: 2025-01-15 21:30:45 JST"),
        ("Europe/Paris", "Current time in Europe/Paris: 2025-01-15 13:30:45 CET"),
        ("America/New_York", "Current time in America/New_York: 2025-01-15 07:30:45 EST"),
        (None, "Current time in UTC: 2025-01-15 12:30:45 UTC"),
        ("", "Current time in UTC: 2025-01-15 12:30:45 UTC"),
    ],
)
def test_time_honours_the_timezone(zone: str | None, expected: str) -> None:
    tool = TimeTool(clock=lambda: FIXED)
    assert tool(timezone=zone) == expected


@pytest.mark.parametrize("zone", ["Mars/Olympus", "../../etc/passwd", "Not A Zone"])
def test_time_rejects_unknown_zones(zone: str) -> None:
    log = ToolCallLog()
    reply = TimeTool(log, clock=lambda: FIXED)(timezone=zone)
    assert reply.startswith("Error: unknown timezone")
    assert "2025" not in reply
    assert log.calls == ["get_current_time"]


def test_default_tools_share_one_log() -> None:
    log = ToolCallLog()
    tools = {tool.name: tool for tool in default_tools(log)}
    assert set(tools) == {"get_weather", "calculator", "get_current_time"}
    tools["calculator"](expression="1+1")
    tools["get_weather"](location="Paris, France")
    assert log.calls == ["calculator", "get_weather"]


# -- file tools -------------------------------------------------------------------------------
@pytest.fixture
def sandbox(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "note.txt").write_text("hello", "utf-8")
    (tmp_path / "secret.txt").write_text("TOP SECRET", "utf-8")
    return root


def test_resolve_inside_refuses_escapes(sandbox: Path) -> None:
    assert resolve_inside(sandbox, "sub/note.txt") == (sandbox / "sub" / "note.txt").resolve()
    assert resolve_inside(sandbox, ".") == sandbox.resolve()
    for bad in ("../secret.txt", "sub/../../secret.txt", str(sandbox.parent / "secret.txt"), "/etc/passwd"):
        with pytest.raises(SandboxError, match="outside the working directory"):
            resolve_inside(sandbox, bad)


def test_resolve_inside_refuses_symlinks_out(sandbox: Path) -> None:
    (sandbox / "link").symlink_to(sandbox.parent)
    with pytest.raises(SandboxError):
        resolve_inside(sandbox, "link/secret.txt")


def test_absolute_path_inside_the_root_is_allowed(sandbox: Path) -> None:
    assert ReadFileTool(sandbox)(file_path=str(sandbox / "sub" / "note.txt")) == "hello"


def test_file_tools_refuse_traversal_and_absolute_paths(sandbox: Path) -> None:
    read, write, listing = ReadFileTool(sandbox), WriteFileTool(sandbox), ListDirectoryTool(sandbox)
    for bad in ("../secret.txt", str(sandbox.parent / "secret.txt")):
        reply = read(file_path=bad)
        assert reply.startswith("Error:") and "TOP SECRET" not in reply
    assert write(file_path="../evil.txt", content="x").startswith("Error:")
    assert not (sandbox.parent / "evil.txt").exists()
    assert write(file_path="/tmp/smoltrace-evil-test.txt", content="x").startswith("Error:")
    assert not Path("/tmp/smoltrace-evil-test.txt").exists()
    reply = listing(directory_path="..")
    assert reply.startswith("Error:") and "secret.txt" not in reply


def test_file_tools_work_inside_the_root(sandbox: Path) -> None:
    log = ToolCallLog()
    tools = {t.name: t for t in optional_tools(("read_file", "write_file", "list_directory"), sandbox, [], log)}
    assert tools["write_file"](file_path="out/a.txt", content="data") == "Wrote 4 characters to out/a.txt"
    assert (sandbox / "out" / "a.txt").read_text("utf-8") == "data"
    assert tools["read_file"](file_path="out/a.txt") == "data"
    assert tools["list_directory"](directory_path=".") == "out/\nsub/"
    assert tools["read_file"](file_path="sub").startswith("Error:")
    assert log.calls == ["write_file", "read_file", "list_directory", "read_file"]


def test_optional_tools_unknown_name() -> None:
    with pytest.raises(ValueError, match="unknown optional tool"):
        optional_tools(("bogus",), Path("."), [])
