"""smoltrace.tasks: schema validation (every bad row listed), file formats, the default task set."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from smoltrace import tasks as tasks_mod
from smoltrace.tasks import (
    MAX_PROMPT_CHARS,
    DatasetError,
    RowError,
    Task,
    load_default_tasks,
    load_local,
    load_tasks,
    select,
    validate_rows,
)
from smoltrace.tools import DEFAULT_TOOL_NAMES, default_tools


def good(task_id: str = "t1", **overrides: object) -> dict[str, object]:
    row: dict[str, object] = {"id": task_id, "prompt": "What is 2+2?", "difficulty": "easy", "agent_type": "tool"}
    row.update(overrides)
    return row


def errors_of(rows: list[object]) -> list[RowError]:
    with pytest.raises(DatasetError) as info:
        validate_rows(enumerate(rows, start=1), "mem")
    return info.value.errors


def fields_by_row(errors: list[RowError]) -> set[tuple[int, str]]:
    return {(e.row, e.field) for e in errors}


# -- validation ---------------------------------------------------------------------------------
def test_a_good_row_becomes_a_task_with_defaults_and_extras() -> None:
    (t,) = validate_rows([(1, good(expected_keywords=["4", " "], custom="kept", expected_tool_calls=2.0))], "mem")
    assert t == Task(id="t1", prompt="What is 2+2?", difficulty="easy", agent_type="tool", expected_tool_calls=2, expected_keywords=("4",))
    assert t.keyword_match == "any"
    assert isinstance(t.expected_tool_calls, int)
    assert t.extra == {"custom": "kept"}


def test_integer_ids_are_accepted_as_text() -> None:
    (t,) = validate_rows([(1, good(task_id=7))], "mem")  # type: ignore[arg-type]
    assert t.id == "7"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"id": None}, "id"),
        ({"id": ""}, "id"),
        ({"id": "../etc/passwd"}, "id"),
        ({"id": "x" * 201}, "id"),
        ({"prompt": None}, "prompt"),
        ({"prompt": "   "}, "prompt"),
        ({"prompt": 12}, "prompt"),
        ({"difficulty": "extreme"}, "difficulty"),
        ({"difficulty": None}, "difficulty"),
        ({"agent_type": "robot"}, "agent_type"),
        ({"agent_type": ["tool"]}, "agent_type"),
        ({"expected_tool": 3}, "expected_tool"),
        ({"expected_tool": "  "}, "expected_tool"),
        ({"expected_tool_calls": -1}, "expected_tool_calls"),
        ({"expected_tool_calls": "2"}, "expected_tool_calls"),
        ({"expected_tool_calls": True}, "expected_tool_calls"),
        ({"expected_tool_calls": 1.5}, "expected_tool_calls"),
        ({"expected_keywords": "Paris"}, "expected_keywords"),
        ({"expected_keywords": ["ok", 3]}, "expected_keywords"),
        ({"expected_answer": {"a": 1}}, "expected_answer"),
        ({"expected_answer": True}, "expected_answer"),
        ({"keyword_match": "most"}, "keyword_match"),
    ],
)
def test_each_bad_field_is_reported_with_row_and_field(overrides: dict[str, object], field: str) -> None:
    row = good()
    row.update(overrides)
    errors = errors_of([good("ok1"), row])
    assert [(e.row, e.field) for e in errors] == [(2, field)]
    assert errors[0].reason


def test_missing_required_fields_are_each_reported() -> None:
    errors = errors_of([{"expected_tool": "calculator"}])
    assert fields_by_row(errors) == {(1, "id"), (1, "prompt"), (1, "difficulty"), (1, "agent_type")}


def test_every_bad_row_is_listed_not_just_the_first() -> None:
    rows: list[object] = [good("a"), good("b", difficulty="x"), "not an object", good("c", agent_type="z", prompt=""), good("d")]
    errors = errors_of(rows)
    assert fields_by_row(errors) == {(2, "difficulty"), (3, "<row>"), (4, "agent_type"), (4, "prompt")}
    rendered = DatasetError("file.jsonl", errors).render()
    assert rendered.splitlines()[0].startswith("invalid dataset file.jsonl")
    assert "row 2: difficulty:" in rendered
    assert "row 3: <row>: must be an object, got str" in rendered
    assert "row 4: agent_type:" in rendered


def test_duplicate_ids_point_at_the_first_occurrence() -> None:
    errors = errors_of([good("same"), good("other"), good("same")])
    assert [(e.row, e.field) for e in errors] == [(3, "id")]
    assert "duplicate id 'same' (first at row 1)" in errors[0].reason


def test_prompt_limit_is_100k_characters() -> None:
    assert MAX_PROMPT_CHARS == 100_000
    (t,) = validate_rows([(1, good(prompt="a" * MAX_PROMPT_CHARS))], "mem")
    assert len(t.prompt) == MAX_PROMPT_CHARS
    errors = errors_of([good(prompt="a" * (MAX_PROMPT_CHARS + 1))])
    assert [(e.row, e.field) for e in errors] == [(1, "prompt")]
    assert "100001" in errors[0].reason


def test_an_empty_dataset_is_an_error() -> None:
    with pytest.raises(DatasetError, match="no tasks"):
        validate_rows([], "mem")


def test_render_caps_the_listing() -> None:
    err = DatasetError("f", [RowError(i, "id", "bad") for i in range(1, 61)])
    lines = err.render().splitlines()
    assert len(lines) == 1 + 50 + 1
    assert lines[-1].strip() == "... and 10 more"


# -- files ------------------------------------------------------------------------------------
def test_jsonl_lists_malformed_lines_with_their_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text("\n".join([json.dumps(good("a")), "{not json", "", json.dumps(good("b", difficulty="??")), "[1,"]) + "\n", "utf-8")
    with pytest.raises(DatasetError) as info:
        load_local(path)
    assert fields_by_row(info.value.errors) == {(2, "<json>"), (4, "difficulty"), (5, "<json>")}
    assert all(e.reason for e in info.value.errors)


def test_jsonl_blank_lines_and_bom_are_fine(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + (json.dumps(good("a")) + "\n\n  \n" + json.dumps(good("b")) + "\n").encode())
    loaded = load_local(path)
    assert [t.id for t in loaded.tasks] == ["a", "b"]
    assert loaded.source == str(path)
    assert len(loaded.sha256) == 64


def test_invalid_utf8_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_bytes(json.dumps(good("a")).encode() + b"\n" + b'{"id": "\xff\xfe"}\n')
    with pytest.raises(DatasetError) as info:
        load_local(path)
    assert "not valid UTF-8" in str(info.value)
    assert "byte" in str(info.value)


def test_json_list(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    path.write_text(json.dumps([good("a"), good("b")]), "utf-8")
    assert [t.id for t in load_local(path).tasks] == ["a", "b"]


def test_json_dict_of_splits_reads_the_requested_split(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"train": [good("tr")], "test": [good("te1"), good("te2")]}), "utf-8")
    assert [t.id for t in load_local(path, "train").tasks] == ["tr"]
    assert [t.id for t in load_local(path, "test").tasks] == ["te1", "te2"]
    with pytest.raises(DatasetError, match="'validation'"):
        load_local(path, "validation")


def test_json_dict_with_data_or_tasks_key(tmp_path: Path) -> None:
    for key in ("data", "tasks"):
        path = tmp_path / f"{key}.json"
        path.write_text(json.dumps({key: [good(key)]}), "utf-8")
        assert [t.id for t in load_local(path).tasks] == [key]


def test_json_rows_are_numbered_by_list_position(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    path.write_text(json.dumps([good("a"), good("b", agent_type="nope"), 5]), "utf-8")
    with pytest.raises(DatasetError) as info:
        load_local(path)
    assert fields_by_row(info.value.errors) == {(2, "agent_type"), (3, "<row>")}


@pytest.mark.parametrize(
    ("text", "message"), [("{oops", "not valid JSON"), ('"a string"', "must be a JSON list"), ("{}", "a JSON object must hold")]
)
def test_bad_json_documents(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "t.json"
    path.write_text(text, "utf-8")
    with pytest.raises(DatasetError, match=message):
        load_local(path)


def test_load_tasks_names(tmp_path: Path) -> None:
    assert load_tasks("default").source == tasks_mod.DEFAULT_DATASET
    with pytest.raises(DatasetError, match="no such file"):
        load_tasks(str(tmp_path / "missing.jsonl"))
    with pytest.raises(DatasetError, match="not a local"):
        load_tasks("just-a-word")


def test_the_digest_changes_with_the_content(tmp_path: Path) -> None:
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text(json.dumps(good("x")) + "\n", "utf-8")
    b.write_text(json.dumps(good("x", prompt="What is 2+3?")) + "\n", "utf-8")
    assert load_local(a).sha256 == load_local(a).sha256
    assert load_local(a).sha256 != load_local(b).sha256


def test_select_filters_by_agent_type_difficulty_shard_and_limit() -> None:
    ts = [
        Task("t1", "p", "easy", "tool"),
        Task("c1", "p", "hard", "code"),
        Task("b1", "p", "easy", "both"),
        Task("t2", "p", "hard", "tool"),
    ]
    assert [t.id for t in select(ts, "tool")] == ["t1", "b1", "t2"]
    assert [t.id for t in select(ts, "code")] == ["c1", "b1"]
    assert [t.id for t in select(ts, "tool", difficulty="hard")] == ["t2"]
    assert [t.id for t in select(ts, "tool", limit=2)] == ["t1", "b1"]
    assert [t.id for t in select(ts, "tool", shard=(1, 2))] == ["b1"]


# -- the default task set -------------------------------------------------------------------------
def test_default_task_set_is_valid_and_covers_every_kind() -> None:
    loaded = load_default_tasks()
    ts = loaded.tasks
    assert len(ts) >= 20
    assert {t.agent_type for t in ts} == {"tool", "code", "both"}
    assert {t.difficulty for t in ts} == {"easy", "medium", "hard"}
    for agent_type in ("tool", "code"):
        assert {t.difficulty for t in ts if t.runs_as(agent_type)} == {"easy", "medium", "hard"}, agent_type
    assert len({t.id for t in ts}) == len(ts)
    assert loaded.sha256 == load_default_tasks().sha256


def test_default_tasks_only_need_the_default_tools() -> None:
    names = set(DEFAULT_TOOL_NAMES)
    assert names == {t.name for t in default_tools()} == {"get_weather", "calculator", "get_current_time"}
    for t in load_default_tasks().tasks:
        assert t.expected_tool in (None, "multiple") or t.expected_tool in names, t.id
        # every task can be scored: it states what a correct run looks like
        assert t.expected_answer is not None or t.expected_keywords or t.expected_tool, t.id


def test_default_task_answers_agree_with_the_tools() -> None:
    """The canned tool values give the expected answers (the set is solvable with the defaults)."""
    from smoltrace.scoring import answer_matches, keywords_match
    from smoltrace.tools import calculate, weather_for

    by_id = {t.id: t for t in load_default_tasks().tasks}
    assert answer_matches(by_id["code_calculator_single"].expected_answer, str(calculate("234*67")))  # type: ignore[arg-type]
    assert answer_matches(by_id["tool_calculator_single"].expected_answer, str(calculate("1234 + 4321")))  # type: ignore[arg-type]
    assert answer_matches(by_id["code_compound_interest"].expected_answer, str(round(calculate("1000 * 1.05 ** 10"), 2)))  # type: ignore[arg-type]
    temps = [int(weather_for(c).split("°")[0]) for c in ("Paris, France", "London, UK", "Tokyo, Japan")]
    assert answer_matches(by_id["code_weather_average"].expected_answer, f"{sum(temps) / 3:.2f}")  # type: ignore[arg-type]
    assert keywords_match(by_id["tool_weather_single"], f"Weather: {weather_for('Paris, France')}")
    assert keywords_match(by_id["shared_basic_weather"], weather_for("Sydney, Australia"))
