"""The default tools: deterministic, no network, same names and canned values as SMOLTRACE.

Task files written for SMOLTRACE's defaults (`get_weather`, `calculator`, `get_current_time`)
score the same with us. Each agent gets fresh tool instances bound to a `ToolCallLog`, which
records every call whose code actually ran: that is how the tools a CodeAgent's code invoked are
known (smolagents' memory only shows the code).
"""

from __future__ import annotations

import ast
import math
import operator
import re
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from smolagents import Tool

WEATHER: dict[str, str] = {
    "paris, france": "20°C, Partly Cloudy",
    "london, uk": "15°C, Rainy",
    "new york, usa": "25°C, Sunny",
    "tokyo, japan": "18°C, Clear",
    "sydney, australia": "22°C, Windy",
}
_DEFAULT_WEATHER = "22°C, Clear"


class ToolCallLog:
    """The tools that really ran during one task, in order (thread-safe)."""

    def __init__(self) -> None:
        self._calls: list[str] = []
        self._lock = threading.Lock()

    def record(self, name: str) -> None:
        with self._lock:
            self._calls.append(name)

    @property
    def calls(self) -> list[str]:
        with self._lock:
            return list(self._calls)


class _LoggedTool(Tool):
    """A Tool that records each call it executes in the task's ToolCallLog."""

    def __init__(self, log: ToolCallLog | None = None, clock: Callable[[], datetime] | None = None) -> None:
        super().__init__()
        self._log = log
        self._clock = clock or (lambda: datetime.now(UTC))

    def _record(self) -> None:
        if self._log is not None:
            self._log.record(self.name)


def weather_for(location: str) -> str:
    """SMOLTRACE's canned weather: known cities by 'City, Country', else 22°C, Clear."""
    key = " ".join(location.lower().replace(",", ", ").split()).replace(" ,", ",")
    return WEATHER.get(key, _DEFAULT_WEATHER)


class WeatherTool(_LoggedTool):
    name = "get_weather"
    description = "Gets the current weather for a location. Returns temperature and conditions."
    inputs = {"location": {"type": "string", "description": "The city and country, e.g. 'Paris, France'"}}
    output_type = "string"

    def forward(self, location: str) -> str:
        self._record()
        return f"Weather in {location}: {weather_for(location)}"


# -- calculator: a safe arithmetic evaluator (no eval) ----------------------------------------
_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "sqrt": math.sqrt,
    "abs": abs,
    "round": round,
    "min": min,
    "max": max,
    "log": math.log,
    "log10": math.log10,
    "exp": math.exp,
    "sin": math.sin,
    "cos": math.cos,
    "tan": math.tan,
    "floor": math.floor,
    "ceil": math.ceil,
}
_CONSTANTS = {"pi": math.pi, "e": math.e}
MAX_EXPRESSION_CHARS = 256
MAX_EXPONENT = 100
MAX_MAGNITUDE = 1e100
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")


class CalculationError(ValueError):
    pass


def calculate(expression: str) -> int | float:
    """Evaluate arithmetic: + - * / // % ** (and ^ as power), parentheses, a few math functions."""
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise CalculationError(f"expression longer than {MAX_EXPRESSION_CHARS} characters")
    text = expression.replace("^", "**").replace("×", "*").replace("÷", "/")  # noqa: RUF001 - accept the sign users type
    text = _THOUSANDS.sub("", text)  # 1,234,567 -> 1234567; the commas between arguments stay
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as err:
        raise CalculationError(f"not an arithmetic expression: {expression!r}") from err

    def check(value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise CalculationError("only numbers are allowed")
        if isinstance(value, float) and not math.isfinite(value):
            raise CalculationError("result is not finite")
        if abs(value) > MAX_MAGNITUDE:
            raise CalculationError("result too large")
        return value

    def visit(node: ast.AST) -> Any:
        if isinstance(node, ast.Expression):
            return visit(node.body)
        if isinstance(node, ast.Constant):
            return check(node.value)
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            left, right = visit(node.left), visit(node.right)
            if isinstance(node.op, ast.Pow) and abs(right) > MAX_EXPONENT:
                raise CalculationError(f"exponent larger than {MAX_EXPONENT}")
            try:
                return check(_BINARY[type(node.op)](left, right))
            except ZeroDivisionError as err:
                raise CalculationError("division by zero") from err
        if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
            return check(_UNARY[type(node.op)](visit(node.operand)))
        if isinstance(node, ast.Name) and node.id in _CONSTANTS:
            return _CONSTANTS[node.id]
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS and not node.keywords:
            try:
                return check(_FUNCTIONS[node.func.id](*[visit(a) for a in node.args]))
            except (TypeError, ValueError) as err:
                raise CalculationError(f"{node.func.id}: {err}") from err
        raise CalculationError(f"unsupported element in expression: {ast.dump(node)[:60]}")

    result = visit(tree)
    if isinstance(result, float) and result.is_integer() and abs(result) < 1e15:
        return int(result)
    return result


class CalculatorTool(_LoggedTool):
    name = "calculator"
    description = "Evaluates an arithmetic expression such as '234 * 67' or '(2 + 3) ** 2 / 5' and returns the result."
    inputs = {"expression": {"type": "string", "description": "The arithmetic expression to evaluate"}}
    output_type = "string"

    def forward(self, expression: str) -> str:
        self._record()
        try:
            return f"Result: {calculate(expression)}"
        except CalculationError as err:
            return f"Error calculating: {err}"


class TimeTool(_LoggedTool):
    name = "get_current_time"
    description = "Gets the current date and time in a timezone (IANA name such as 'UTC', 'Asia/Tokyo' or 'Europe/Paris')."
    inputs = {"timezone": {"type": "string", "description": "IANA timezone name, default UTC", "nullable": True}}
    output_type = "string"

    def forward(self, timezone: str | None = "UTC") -> str:
        self._record()
        name = (timezone or "UTC").strip() or "UTC"
        try:
            zone = ZoneInfo("UTC" if name.upper() in ("UTC", "GMT", "Z") else name)
        except (ZoneInfoNotFoundError, ValueError):
            return f"Error: unknown timezone {name!r}; use an IANA name such as 'UTC' or 'Europe/Paris'"
        now = self._clock().astimezone(zone)
        return f"Current time in {name}: {now.strftime('%Y-%m-%d %H:%M:%S %Z')}"


DEFAULT_TOOL_CLASSES: tuple[type[_LoggedTool], ...] = (WeatherTool, CalculatorTool, TimeTool)
DEFAULT_TOOL_NAMES = tuple(cls.name for cls in DEFAULT_TOOL_CLASSES)


def default_tools(log: ToolCallLog | None = None) -> list[Tool]:
    return [cls(log) for cls in DEFAULT_TOOL_CLASSES]


# -- optional tools (--enable-tools), sandboxed to --working-directory -------------------------
MAX_READ_BYTES = 1_000_000


class SandboxError(ValueError):
    pass


def resolve_inside(root: Path, relative: str) -> Path:
    """The path inside `root` that `relative` names; anything that escapes it is refused."""
    base = root.resolve()
    candidate = (base / relative).resolve()
    if candidate != base and base not in candidate.parents:
        raise SandboxError(f"{relative!r} is outside the working directory")
    return candidate


class _SandboxedTool(_LoggedTool):
    def __init__(self, root: Path, log: ToolCallLog | None = None) -> None:
        super().__init__(log)
        self._root = root


class ReadFileTool(_SandboxedTool):
    name = "read_file"
    description = "Reads a text file inside the working directory and returns its content (at most 1 MB)."
    inputs = {"file_path": {"type": "string", "description": "Path relative to the working directory"}}
    output_type = "string"

    def forward(self, file_path: str) -> str:
        self._record()
        try:
            path = resolve_inside(self._root, file_path)
            if not path.is_file():
                return f"Error: {file_path} is not a file"
            data = path.read_bytes()[: MAX_READ_BYTES + 1]
        except (SandboxError, OSError) as err:
            return f"Error: {err}"
        text = data[:MAX_READ_BYTES].decode("utf-8", "replace")
        return text + ("\n[truncated at 1 MB]" if len(data) > MAX_READ_BYTES else "")


class WriteFileTool(_SandboxedTool):
    name = "write_file"
    description = "Writes text to a file inside the working directory (creates folders as needed)."
    inputs = {
        "file_path": {"type": "string", "description": "Path relative to the working directory"},
        "content": {"type": "string", "description": "Text to write"},
    }
    output_type = "string"

    def forward(self, file_path: str, content: str) -> str:
        self._record()
        try:
            path = resolve_inside(self._root, file_path)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content, "utf-8")
        except (SandboxError, OSError) as err:
            return f"Error: {err}"
        return f"Wrote {len(content)} characters to {file_path}"


class ListDirectoryTool(_SandboxedTool):
    name = "list_directory"
    description = "Lists the entries of a folder inside the working directory."
    inputs = {
        "directory_path": {"type": "string", "description": "Folder relative to the working directory ('.' for its root)", "nullable": True}
    }
    output_type = "string"

    def forward(self, directory_path: str | None = ".") -> str:
        self._record()
        try:
            path = resolve_inside(self._root, directory_path or ".")
            entries = sorted(path.iterdir(), key=lambda p: p.name)[:500]
        except (SandboxError, OSError) as err:
            return f"Error: {err}"
        return "\n".join(f"{e.name}{'/' if e.is_dir() else ''}" for e in entries) or "(empty)"


def optional_tools(names: tuple[str, ...], root: Path | None, authorized_imports: list[str], log: ToolCallLog | None = None) -> list[Tool]:
    """The --enable-tools tools; the file tools need a root (never a default: see tool_root)."""
    tools: list[Tool] = []
    for name in names:
        if name in ("read_file", "write_file", "list_directory") and root is None:
            raise ValueError(f"{name} needs a working directory")
        if name == "read_file" and root is not None:
            tools.append(ReadFileTool(root, log))
        elif name == "write_file" and root is not None:
            tools.append(WriteFileTool(root, log))
        elif name == "list_directory" and root is not None:
            tools.append(ListDirectoryTool(root, log))
        elif name == "python_interpreter":
            from smolagents import PythonInterpreterTool

            tools.append(PythonInterpreterTool(authorized_imports=authorized_imports))
        else:
            raise ValueError(f"unknown optional tool {name!r}")
    return tools
