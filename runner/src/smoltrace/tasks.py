"""Task datasets: the schema, validation that lists every bad row, and loading.

Schema (SMOLTRACE's, plus two fields): `id`, `prompt`, `difficulty` (easy|medium|hard),
`agent_type` (tool|code|both), `expected_tool` (a tool name, "multiple" or null),
`expected_tool_calls` (int >= 0), `expected_keywords` (list of strings), and ours:
`expected_answer` (string or number; exact, or numeric within a tolerance) and `keyword_match`
(any|all, default any). Unknown fields are kept in `extra` and ignored.

Sources: the default task set shipped in the package (`--dataset-name default`), a local
`.json` (a list, or a dict of splits) or `.jsonl` file, or a Hub dataset (`owner/name`) loaded with
`datasets.load_dataset` at an optional revision; the commit it resolved to is recorded.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

DEFAULT_DATASET = "smoltrace/default-tasks"
DIFFICULTIES = ("easy", "medium", "hard")
AGENT_TYPES = ("tool", "code", "both")
KEYWORD_MATCHES = ("any", "all")
MAX_PROMPT_CHARS = 100_000
MAX_TASKS = 100_000
_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@/+-]{0,199}$")
_KNOWN = {
    "id",
    "prompt",
    "difficulty",
    "agent_type",
    "expected_tool",
    "expected_tool_calls",
    "expected_keywords",
    "expected_answer",
    "keyword_match",
}


@dataclass(frozen=True, slots=True)
class Task:
    id: str
    prompt: str
    difficulty: str
    agent_type: str
    expected_tool: str | None = None
    expected_tool_calls: int | None = None
    expected_keywords: tuple[str, ...] = ()
    expected_answer: str | float | int | None = None
    keyword_match: str = "any"
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def runs_as(self, agent_type: str) -> bool:
        return self.agent_type in (agent_type, "both")


@dataclass(frozen=True, slots=True)
class RowError:
    row: int  # 1-based row (line for .jsonl, list position for .json)
    field: str
    reason: str

    def __str__(self) -> str:
        return f"row {self.row}: {self.field}: {self.reason}"


class DatasetError(Exception):
    """The dataset cannot be used; `errors` lists every bad row."""

    def __init__(self, source: str, errors: Sequence[RowError] = (), message: str = "") -> None:
        self.source = source
        self.errors = list(errors)
        self.message = message or f"{len(self.errors)} problem(s) in {source}"
        super().__init__(self.render())

    def render(self, limit: int = 50) -> str:
        lines = [f"invalid dataset {self.source}: {self.message}"]
        lines += [f"  {e}" for e in self.errors[:limit]]
        if len(self.errors) > limit:
            lines.append(f"  ... and {len(self.errors) - limit} more")
        return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class TaskSet:
    tasks: tuple[Task, ...]
    source: str  # what the user named
    revision: str | None  # the Hub commit read (40-hex), or None for local tasks
    sha256: str  # of the rows as loaded (reproducibility)


def _validate_row(index: int, row: Any, errors: list[RowError]) -> Task | None:
    if not isinstance(row, dict):
        errors.append(RowError(index, "<row>", f"must be an object, got {type(row).__name__}"))
        return None
    start = len(errors)

    def bad(field_name: str, reason: str) -> None:
        errors.append(RowError(index, field_name, reason))

    task_id = row.get("id")
    if isinstance(task_id, int) and not isinstance(task_id, bool):
        task_id = str(task_id)
    if not isinstance(task_id, str) or not task_id:
        bad("id", "required, a non-empty string")
    elif not _ID_PATTERN.match(task_id):
        bad("id", "at most 200 characters of letters, digits and ._:@/+- (starting with a letter or digit)")
    prompt = row.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        bad("prompt", "required, a non-empty string")
    elif len(prompt) > MAX_PROMPT_CHARS:
        bad("prompt", f"longer than {MAX_PROMPT_CHARS} characters ({len(prompt)})")
    difficulty = row.get("difficulty")
    if difficulty not in DIFFICULTIES:
        bad("difficulty", f"required, one of {', '.join(DIFFICULTIES)}; got {difficulty!r}")
    agent_type = row.get("agent_type")
    if agent_type not in AGENT_TYPES:
        bad("agent_type", f"required, one of {', '.join(AGENT_TYPES)}; got {agent_type!r}")
    expected_tool = row.get("expected_tool")
    if expected_tool is not None and (not isinstance(expected_tool, str) or not expected_tool.strip()):
        bad("expected_tool", f"a tool name, 'multiple' or null; got {expected_tool!r}")
    calls = row.get("expected_tool_calls")
    if calls is not None and (isinstance(calls, bool) or not isinstance(calls, int) or calls < 0):
        if isinstance(calls, float) and calls.is_integer() and calls >= 0:
            calls = int(calls)
        else:
            bad("expected_tool_calls", f"a whole number >= 0 or null; got {calls!r}")
    keywords = row.get("expected_keywords")
    if keywords is None:
        keywords = []
    if not isinstance(keywords, list) or not all(isinstance(k, str) for k in keywords):
        bad("expected_keywords", "a list of strings")
        keywords = []
    answer = row.get("expected_answer")
    if answer is not None and (isinstance(answer, bool) or not isinstance(answer, str | int | float)):
        bad("expected_answer", f"a string or a number; got {type(answer).__name__}")
    keyword_match = row.get("keyword_match") or "any"
    if keyword_match not in KEYWORD_MATCHES:
        bad("keyword_match", f"'any' or 'all'; got {keyword_match!r}")
    if len(errors) > start:
        return None
    return Task(
        id=task_id,  # type: ignore[arg-type]
        prompt=prompt,  # type: ignore[arg-type]
        difficulty=difficulty,  # type: ignore[arg-type]
        agent_type=agent_type,  # type: ignore[arg-type]
        expected_tool=expected_tool.strip() if isinstance(expected_tool, str) else None,
        expected_tool_calls=calls,
        expected_keywords=tuple(k for k in keywords if k.strip()),
        expected_answer=answer,
        keyword_match=keyword_match,
        extra={k: v for k, v in row.items() if k not in _KNOWN},
    )


def validate_rows(rows: Iterable[tuple[int, Any]], source: str, pre_errors: Sequence[RowError] = ()) -> tuple[Task, ...]:
    """Every (row number, row) checked; raises DatasetError listing all bad rows (and duplicate ids)."""
    errors = list(pre_errors)
    tasks: list[Task] = []
    first_row: dict[str, int] = {}
    for count, (index, row) in enumerate(rows, start=1):
        if count > MAX_TASKS:
            errors.append(RowError(index, "<row>", f"more than {MAX_TASKS} tasks"))
            break
        task = _validate_row(index, row, errors)
        if task is None:
            continue
        if task.id in first_row:
            errors.append(RowError(index, "id", f"duplicate id {task.id!r} (first at row {first_row[task.id]})"))
            continue
        first_row[task.id] = index
        tasks.append(task)
    if errors:
        errors.sort(key=lambda e: e.row)
        raise DatasetError(source, errors)
    if not tasks:
        raise DatasetError(source, message="no tasks")
    return tuple(tasks)


def _read_text(path: Path, source: str) -> str:
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DatasetError(source, message=f"cannot read: {err.strerror}") from err
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise DatasetError(source, message=f"not valid UTF-8 (byte {err.start}); save the file as UTF-8") from err


def parse_jsonl(text: str, source: str) -> tuple[list[tuple[int, Any]], list[RowError]]:
    """(line number, object) per non-blank line, and the lines that are not JSON."""
    rows: list[tuple[int, Any]] = []
    errors: list[RowError] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append((number, json.loads(line)))
        except RecursionError:
            errors.append(RowError(number, "<json>", "nested too deeply"))
        except json.JSONDecodeError as err:
            errors.append(RowError(number, "<json>", f"not valid JSON: {err.msg} at column {err.colno}"))
    return rows, errors


def parse_json(text: str, source: str, split: str) -> list[Any]:
    try:
        payload = json.loads(text)
    except RecursionError as err:
        raise DatasetError(source, message="JSON nested too deeply") from err
    except json.JSONDecodeError as err:
        raise DatasetError(source, message=f"not valid JSON: {err.msg} at line {err.lineno} column {err.colno}") from err
    if isinstance(payload, list):
        return payload
    if isinstance(payload, dict):
        for key in (split, "data", "tasks"):
            if isinstance(payload.get(key), list):
                return payload[key]
        raise DatasetError(source, message=f"a JSON object must hold the tasks as a list under {split!r}, 'data' or 'tasks'")
    raise DatasetError(source, message=f"must be a JSON list of tasks, got {type(payload).__name__}")


def _digest(tasks: Sequence[Task]) -> str:
    h = hashlib.sha256()
    for t in tasks:
        h.update(
            json.dumps(
                [
                    t.id,
                    t.prompt,
                    t.difficulty,
                    t.agent_type,
                    t.expected_tool,
                    t.expected_tool_calls,
                    list(t.expected_keywords),
                    t.expected_answer,
                    t.keyword_match,
                ],
                sort_keys=True,
            ).encode()
        )
    return h.hexdigest()


def load_default_tasks() -> TaskSet:
    text = resources.files("smoltrace.data").joinpath("default_tasks.jsonl").read_text("utf-8")
    rows, errors = parse_jsonl(text, DEFAULT_DATASET)
    tasks = validate_rows(rows, DEFAULT_DATASET, errors)
    return TaskSet(tasks, DEFAULT_DATASET, None, _digest(tasks))


def load_local(path: Path, split: str = "train") -> TaskSet:
    source = str(path)
    text = _read_text(path, source)
    if path.suffix == ".jsonl":
        rows, errors = parse_jsonl(text, source)
        tasks = validate_rows(rows, source, errors)
    else:
        tasks = validate_rows(enumerate(parse_json(text, source, split), start=1), source)
    return TaskSet(tasks, source, None, _digest(tasks))


def _rows_of(dataset: Any) -> Iterable[tuple[int, Any]]:
    return enumerate((dict(row) for row in dataset), start=1)


def load_hub(repo_id: str, revision: str | None, split: str = "train", token: str | None = None) -> TaskSet:
    """A Hub dataset, as SMOLTRACE users have them (`datasets.push_to_hub`: Parquet; or JSON,
    JSONL, CSV: whatever `datasets` reads), loaded with `datasets.load_dataset` at `revision` (a
    branch, tag or commit; the default branch when None). The commit actually read is resolved
    first and recorded, so the run can be repeated exactly without the user typing a SHA."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled, RepositoryNotFoundError, RevisionNotFoundError

    try:
        sha = HfApi(token=token).dataset_info(repo_id, revision=revision).sha
    except RepositoryNotFoundError as err:
        raise DatasetError(repo_id, message="no such dataset on the Hub (or no access with this token)") from err
    except RevisionNotFoundError as err:
        raise DatasetError(repo_id, message=f"revision {revision!r} not found (a branch, tag or commit of the dataset)") from err
    except OfflineModeIsEnabled as err:
        raise DatasetError(repo_id, message="the Hub is offline here (HF_HUB_OFFLINE); use a local task file") from err
    except (HfHubHTTPError, OSError) as err:
        raise DatasetError(repo_id, message=f"cannot reach the Hub: {err}") from err
    if not sha:
        raise DatasetError(repo_id, message="the Hub did not say which commit the revision is")
    from datasets import load_dataset

    try:
        dataset = load_dataset(repo_id, split=split, revision=sha, token=token)
    except ValueError as err:  # an unknown split, an unreadable data file
        raise DatasetError(repo_id, message=f"cannot load split {split!r} at {sha[:12]}: {str(err).splitlines()[0]}") from err
    except Exception as err:  # datasets' own errors (no data files, bad format) and network failures
        first = (str(err).splitlines() or [""])[0]
        raise DatasetError(repo_id, message=f"cannot load it with datasets at {sha[:12]}: {type(err).__name__}: {first}") from err
    tasks = validate_rows(_rows_of(dataset), repo_id)
    return TaskSet(tasks, repo_id, sha, _digest(tasks))


def load_tasks(name: str, revision: str | None = None, split: str = "train", token: str | None = None) -> TaskSet:
    if name in (DEFAULT_DATASET, "default"):
        return load_default_tasks()
    path = Path(name).expanduser()
    if path.suffix in (".json", ".jsonl") or path.exists():
        if not path.is_file():
            raise DatasetError(name, message="no such file")
        return load_local(path, split)
    if re.fullmatch(r"[\w.-]+/[\w.-]+", name):
        return load_hub(name, revision, split, token)
    raise DatasetError(name, message="not a local .json/.jsonl file, 'default', or a Hub dataset id (owner/name)")


def select(
    tasks: Sequence[Task], agent_type: str, difficulty: str | None = None, limit: int | None = None, shard: tuple[int, int] | None = None
) -> list[Task]:
    """Tasks an agent type runs, filtered by difficulty, sliced to a shard, capped at `limit`."""
    chosen = [t for t in tasks if t.runs_as(agent_type) and (difficulty is None or t.difficulty == difficulty)]
    if shard is not None:
        index, count = shard
        chosen = [t for i, t in enumerate(chosen) if i % count == index]
    return chosen[:limit] if limit is not None else chosen
