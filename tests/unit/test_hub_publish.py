"""Hub publishing pieces that need no server: schemas, tables, cards, names, retries."""

from __future__ import annotations

import io
import random

import pyarrow.parquet as pq
import pytest

from smoltrace.cards import render_card
from smoltrace.hub import (
    LEADERBOARD_SCHEMA,
    METRICS_SCHEMA,
    RESULTS_SCHEMA,
    TRACES_SCHEMA,
    HubRetry,
    dataset_names,
    parquet_bytes,
    run_timestamp,
    to_table,
    traces_table,
)

META = {"run_id": "run-1", "model": "openai/x", "provider": "litellm", "agent_type": "both", "started_at": "2026-11-26T12:00:05Z"}
NAMES = dataset_names("tester", "20261126_120005")


def test_names_follow_the_timestamp_of_the_run_start() -> None:
    assert run_timestamp(META) == "20261126_120005"
    assert NAMES == {
        "results": "tester/smoltrace-results-20261126_120005",
        "traces": "tester/smoltrace-traces-20261126_120005",
        "metrics": "tester/smoltrace-metrics-20261126_120005",
        "leaderboard": "tester/smoltrace-leaderboard",
    }


def test_rows_are_coerced_to_the_fixed_schema() -> None:
    rows = [
        {"task_id": "a", "success": 1, "steps": "3", "tools_used": ["get_weather"], "duration_ms": 5, "unexpected": "dropped"},
        {"task_id": "b", "success": False, "steps": 2, "tools_used": [], "energy_j": None},
    ]
    table = to_table(rows, RESULTS_SCHEMA)
    assert table.schema == RESULTS_SCHEMA
    assert "unexpected" not in table.column_names
    assert table.column("success").to_pylist() == [True, False]
    assert table.column("steps").to_pylist() == [3, 2]
    assert table.column("duration_ms").to_pylist() == [5.0, None]
    assert table.column("energy_j").to_pylist() == [None, None]


def test_traces_keep_spans_with_json_attributes() -> None:
    doc = {
        "trace_id": "a" * 32,
        "run_id": "run-1",
        "root_span_id": "b" * 16,
        "test_ids": ["t"],
        "test_case_uids": ["tool:t"],
        "span_count": 1,
        "spans": [
            {
                "trace_id": "a" * 32,
                "span_id": "b" * 16,
                "parent_span_id": None,
                "name": "test_evaluation",
                "kind": "INTERNAL",
                "start_time": 1,
                "end_time": 2,
                "duration_ms": 0.000001,
                "attributes": {"test.id": "t", "n": 3},
                "events": [],
                "status": {"code": "OK", "description": ""},
            }
        ],
    }
    second = {
        **doc["spans"][0],
        "span_id": "c" * 16,
        "parent_span_id": "b" * 16,
        "name": "completion",
        "attributes": {"n": 2.5, "flag": True, "tools": ("a", "b"), "mixed": 1},
        "status": {"code": "ERROR", "description": "boom"},
        "events": [{"name": "exception", "timestamp": 3, "attributes": {"exception.type": "ValueError"}}],
        "links": [{"trace_id": "d" * 32, "span_id": "e" * 16}],
        "resource": {"attributes": {"run.id": "run-1", "k8s.pod.name": "p-0"}},
    }
    doc["spans"][0]["attributes"]["mixed"] = "text"
    doc["spans"].append(second)
    table = pq.read_table(io.BytesIO(parquet_bytes(traces_table([doc]))))
    root, child = table.column("spans").to_pylist()[0]
    assert root["name"] == "test_evaluation"
    # attributes are a struct (a dict when read back), keys unified over the run, one type per key
    assert root["attributes"] == {"test.id": "t", "n": 3.0, "flag": None, "tools": None, "mixed": "text"}
    assert child["attributes"] == {"test.id": None, "n": 2.5, "flag": True, "tools": ["a", "b"], "mixed": "1"}
    assert root["status"] == {"code": "OK", "description": None} and child["status"] == {"code": "ERROR", "description": "boom"}
    assert child["events"] == [{"name": "exception", "timestamp": 3, "attributes": {"exception.type": "ValueError"}}]
    assert child["links"][0]["span_id"] == "e" * 16
    assert child["resource"]["attributes"] == {"run.id": "run-1", "k8s.pod.name": "p-0"}
    assert root["kind"] == "INTERNAL"


def test_parquet_round_trip_of_an_empty_metrics_table() -> None:
    table = to_table([], METRICS_SCHEMA)
    back = pq.read_table(io.BytesIO(parquet_bytes(table)))
    assert back.num_rows == 0
    assert back.schema.names == METRICS_SCHEMA.names


@pytest.mark.parametrize(
    ("kind", "schema"),
    [("results", RESULTS_SCHEMA), ("traces", TRACES_SCHEMA), ("metrics", METRICS_SCHEMA), ("leaderboard", LEADERBOARD_SCHEMA)],
)
def test_cards_list_exactly_the_columns_of_the_table(kind: str, schema) -> None:
    table = to_table([], schema)
    card = render_card(kind, table, {**META, "versions": {"smolagents": "1.26.0"}}, NAMES)
    assert card.startswith("---\nlicense: apache-2.0\n")
    documented = [line.split("`")[1] for line in card.splitlines() if line.startswith("| `")]
    assert documented == schema.names
    assert f'load_dataset("{NAMES[kind]}", split="train")' in card
    assert "path: data/*.parquet" in card
    if kind != "leaderboard":
        assert "`openai/x`" in card and "1.26.0" in card


class _Response:
    def __init__(self, status: int, retry_after: str | None = None) -> None:
        self.status_code = status
        self.headers = {"retry-after": retry_after} if retry_after else {}


class _HttpError(OSError):
    def __init__(self, status: int, retry_after: str | None = None) -> None:
        super().__init__(f"HTTP {status}")
        self.response = _Response(status, retry_after)


def test_retry_honours_retry_after_then_succeeds() -> None:
    sleeps: list[float] = []
    calls = iter([_HttpError(429, "2"), _HttpError(503), "ok"])

    def fn() -> str:
        item = next(calls)
        if isinstance(item, Exception):
            raise item
        return item

    retry = HubRetry(max_retries=3, sleep=sleeps.append, rng=random.Random(1))
    assert retry.call("commit", fn) == "ok"
    assert sleeps[0] == 2.0
    assert 0 <= sleeps[1] <= 2.0  # full jitter, second attempt: up to 2 x base


def test_retry_gives_up_and_never_retries_client_errors() -> None:
    retry = HubRetry(max_retries=2, sleep=lambda s: None)
    with pytest.raises(_HttpError):
        retry.call("x", lambda: (_ for _ in ()).throw(_HttpError(500)))
    attempts = []

    def forbidden() -> None:
        attempts.append(1)
        raise _HttpError(403)

    with pytest.raises(_HttpError):
        retry.call("x", forbidden)
    assert len(attempts) == 1
