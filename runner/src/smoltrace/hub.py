"""Publishing a run folder to the Hugging Face Hub: 4 datasets, Parquet + a dataset card each.

- `{user}/smoltrace-results-{ts}`, `-traces-{ts}`, `-metrics-{ts}` (ts = the run's UTC start,
  `YYYYmmdd_HHMMSS`) and `{user}/smoltrace-leaderboard`; private by default (`--public` to
  change), the leaderboard too when it is created.
- One commit per dataset: `data/train-00000-of-00001.parquet` and `README.md` together.
- The leaderboard is append-only: each run adds `data/<run_id>.parquet` (one row, fixed versioned
  schema), so concurrent runs never overwrite each other; publishing the same run again rewrites
  the same files (no duplicate rows anywhere).
- Calls are retried with exponential backoff and jitter on 429 (honouring Retry-After) and 5xx.
- Everything is read from the local files, which are always written first: a failed publish
  loses nothing, and `smoltrace-eval publish RUN_DIR` does it later.
"""

from __future__ import annotations

import io
import json
import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.parquet as pq

from . import __version__
from .cards import render_card
from .trace_schema import span_type, span_value

log = logging.getLogger(__name__)

T = TypeVar("T")
DATA_FILE = "data/train-00000-of-00001.parquet"
LEADERBOARD = "smoltrace-leaderboard"


class PublishError(Exception):
    """Publishing failed; the local run folder is intact."""


# -- schemas ----------------------------------------------------------------------------------
RESULTS_SCHEMA = pa.schema(
    [
        ("model", pa.string()),
        ("evaluation_date", pa.string()),
        ("task_id", pa.string()),
        ("test_case_uid", pa.string()),
        ("agent_type", pa.string()),
        ("difficulty", pa.string()),
        ("prompt", pa.string()),
        ("success", pa.bool_()),
        ("tool_called", pa.bool_()),
        ("correct_tool", pa.bool_()),
        ("final_answer_called", pa.bool_()),
        ("response_correct", pa.bool_()),
        ("tools_used", pa.list_(pa.string())),
        ("steps", pa.int64()),
        ("response", pa.string()),
        ("error", pa.string()),
        ("trace_id", pa.string()),
        ("span_id", pa.string()),
        ("run_id", pa.string()),
        ("execution_time_ms", pa.float64()),
        ("total_tokens", pa.int64()),
        ("cost_usd", pa.float64()),
        ("enhanced_trace_info", pa.string()),
        ("provider", pa.string()),
        ("test_index", pa.int64()),
        ("expected_tool", pa.string()),
        ("expected_tool_calls", pa.int64()),
        ("expected_keywords", pa.list_(pa.string())),
        ("expected_answer", pa.string()),
        ("failure_reason", pa.string()),
        ("error_type", pa.string()),
        ("attempts", pa.int64()),
        ("retries", pa.int64()),
        ("duration_ms", pa.float64()),
        ("prompt_tokens", pa.int64()),
        ("completion_tokens", pa.int64()),
        ("energy_j", pa.float64()),
        ("co2_g", pa.float64()),
        ("started_at", pa.string()),
        ("finished_at", pa.string()),
        ("start_time_unix_nano", pa.int64()),
        ("end_time_unix_nano", pa.int64()),
    ]
)
TRACES_SCHEMA = pa.schema(
    [
        ("trace_id", pa.string()),
        ("run_id", pa.string()),
        ("root_span_id", pa.string()),
        ("test_ids", pa.list_(pa.string())),
        ("test_case_uids", pa.list_(pa.string())),
        ("agent_type", pa.string()),
        ("span_count", pa.int64()),
        ("model_calls", pa.int64()),
        ("prompt_tokens", pa.int64()),
        ("completion_tokens", pa.int64()),
        ("total_tokens", pa.int64()),
        ("total_duration_ms", pa.float64()),
        ("total_cost_usd", pa.float64()),
        ("start_time", pa.int64()),
        ("end_time", pa.int64()),
        ("incomplete", pa.bool_()),
        ("spans", pa.list_(span_type([]))),  # attribute structs: see traces_schema
    ]
)
METRICS_SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("service_name", pa.string()),
        ("timestamp", pa.string()),
        ("timestamp_unix_nano", pa.string()),
        ("gpu_id", pa.string()),
        ("gpu_name", pa.string()),
        ("gpu_uuid", pa.string()),
        ("gpu_utilization_percent", pa.float64()),
        ("gpu_memory_used_mib", pa.float64()),
        ("gpu_memory_total_mib", pa.float64()),
        ("gpu_temperature_celsius", pa.float64()),
        ("gpu_power_watts", pa.float64()),
        ("co2_emissions_gco2e", pa.float64()),
        ("power_cost_usd", pa.float64()),
        ("gpu_energy_joules", pa.float64()),
    ]
)
LEADERBOARD_SCHEMA = pa.schema(
    [
        ("schema_version", pa.int64()),
        ("run_id", pa.string()),
        ("model", pa.string()),
        ("agent_type", pa.string()),
        ("provider", pa.string()),
        ("timestamp", pa.string()),
        ("submitted_by", pa.string()),
        ("use_case", pa.string()),
        ("team", pa.string()),
        ("purpose", pa.string()),
        ("suite_version", pa.string()),
        ("results_dataset", pa.string()),
        ("traces_dataset", pa.string()),
        ("metrics_dataset", pa.string()),
        ("dataset_used", pa.string()),
        ("total_tests", pa.int64()),
        ("successful_tests", pa.int64()),
        ("failed_tests", pa.int64()),
        ("success_rate", pa.float64()),
        ("avg_steps", pa.float64()),
        ("avg_duration_ms", pa.float64()),
        ("total_duration_ms", pa.float64()),
        ("total_tokens", pa.int64()),
        ("avg_tokens_per_test", pa.int64()),
        ("total_cost_usd", pa.float64()),
        ("avg_cost_per_test_usd", pa.float64()),
        ("co2_emissions_g", pa.float64()),
        ("power_cost_total_usd", pa.float64()),
        ("energy_j", pa.float64()),
        ("gpu_utilization_avg", pa.float64()),
        ("gpu_utilization_max", pa.float64()),
        ("gpu_memory_avg_mib", pa.float64()),
        ("gpu_memory_max_mib", pa.float64()),
        ("gpu_temperature_avg", pa.float64()),
        ("gpu_temperature_max", pa.float64()),
        ("gpu_power_avg_w", pa.float64()),
        ("notes", pa.string()),
        ("status", pa.string()),
    ]
)


def _coerce(value: Any, kind: pa.DataType) -> Any:
    if value is None:
        return None
    if pa.types.is_string(kind):
        return value if isinstance(value, str) else json.dumps(value, default=str) if isinstance(value, dict | list) else str(value)
    if pa.types.is_integer(kind):
        return int(value)
    if pa.types.is_floating(kind):
        return float(value)
    if pa.types.is_boolean(kind):
        return bool(value)
    if pa.types.is_list(kind):
        return [_coerce(v, kind.value_type) for v in value]
    return value


def to_table(rows: Sequence[Mapping[str, Any]], schema: pa.Schema) -> pa.Table:
    """Rows → a table with exactly this schema (missing columns null, extra columns dropped)."""
    columns = {f.name: [_coerce(r.get(f.name), f.type) for r in rows] for f in schema}
    return pa.Table.from_pydict(columns, schema=schema)


def traces_schema(traces: Sequence[Mapping[str, Any]]) -> pa.Schema:
    """TRACES_SCHEMA with the span struct of these traces (attribute keys unified over the run)."""
    spans = span_type([s for doc in traces for s in doc.get("spans") or []])
    return TRACES_SCHEMA.set(TRACES_SCHEMA.get_field_index("spans"), pa.field("spans", pa.list_(spans)))


def traces_table(traces: Sequence[Mapping[str, Any]]) -> pa.Table:
    """The traces dataset: one row per trace document, spans as TraceMind reads them."""
    schema = traces_schema(traces)
    spans = schema.field("spans").type.value_type
    rows = []
    for doc in traces:
        row = {k: doc.get(k) for k in TRACES_SCHEMA.names if k != "spans"}
        row["spans"] = [span_value(s, spans) for s in doc.get("spans") or []]
        rows.append(row)
    return to_table(rows, schema)


def parquet_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


# -- names ------------------------------------------------------------------------------------
def run_timestamp(metadata: Mapping[str, Any]) -> str:
    started = str(metadata.get("started_at") or "")
    try:
        moment = datetime.fromisoformat(started.replace("Z", "+00:00"))
    except ValueError:
        moment = datetime.now(UTC)
    return moment.astimezone(UTC).strftime("%Y%m%d_%H%M%S")


def dataset_names(user: str, timestamp: str) -> dict[str, str]:
    return {
        "results": f"{user}/smoltrace-results-{timestamp}",
        "traces": f"{user}/smoltrace-traces-{timestamp}",
        "metrics": f"{user}/smoltrace-metrics-{timestamp}",
        "leaderboard": f"{user}/{LEADERBOARD}",
    }


# -- retries ----------------------------------------------------------------------------------
def _status(err: BaseException) -> int | None:
    response = getattr(err, "response", None)
    return getattr(response, "status_code", None)


def describe_failure(err: BaseException) -> tuple[str, bool]:
    """One line for a failed Hub call (any exception, its causes included) and whether the token
    itself was refused (401): unreachable, 403, 404, 409, 5xx each say what happened."""
    chain: list[BaseException] = []
    current: BaseException | None = err
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    status = next((s for s in (_status(e) for e in chain) if isinstance(s, int)), None)
    first = (str(chain[-1]).strip().splitlines() or [type(chain[-1]).__name__])[0][:200]
    if status == 401:
        return "the Hub refused the token (HTTP 401): set HF_TOKEN or --hf-token-file to a valid write token", True
    if status == 403:
        return f"the Hub refused the write (HTTP 403: {first}); check the token's write access to the namespace", False
    if status == 404:
        return f"the Hub answered 404 Not Found ({first})", False
    if status == 409:
        return f"the Hub reported a conflict (HTTP 409: {first})", False
    if status is not None and status >= 500:
        return f"the Hub failed (HTTP {status}) after the retries", False
    if status is not None:
        return f"the Hub answered HTTP {status} ({first})", False
    names = {type(e).__name__ for e in chain}
    if names & {"ConnectError", "ConnectTimeout", "ConnectionError", "ConnectionRefusedError", "gaierror", "OfflineModeIsEnabled"}:
        return f"the Hub is unreachable ({type(chain[-1]).__name__}: {first})", False
    if names & {"ReadTimeout", "Timeout", "TimeoutException", "TimeoutError"}:
        return "the Hub did not answer in time", False
    return f"{type(err).__name__}: {first}", False


def _retry_after(err: BaseException) -> float | None:
    response = getattr(err, "response", None)
    headers = getattr(response, "headers", None)
    value = headers.get("retry-after") if headers is not None else None
    try:
        return max(0.0, min(float(value), 60.0)) if value else None
    except ValueError:
        return None


@dataclass(slots=True)
class HubRetry:
    max_retries: int = 5
    base_delay_s: float = 1.0
    max_delay_s: float = 30.0
    sleep: Callable[[float], None] = time.sleep
    rng: random.Random = field(default_factory=random.Random)

    def call(self, what: str, fn: Callable[[], T]) -> T:
        attempt = 0
        while True:
            attempt += 1
            try:
                return fn()
            except Exception as err:
                status = _status(err)
                offline = type(err).__name__ == "OfflineModeIsEnabled"  # HF_HUB_OFFLINE: retrying cannot help
                retryable = not offline and (
                    status == 429 or (status is not None and status >= 500) or isinstance(err, ConnectionError | TimeoutError)
                )
                if not retryable or attempt > self.max_retries:
                    raise
                delay = _retry_after(err)
                if delay is None:
                    delay = self.rng.uniform(0, min(self.max_delay_s, self.base_delay_s * 2 ** (attempt - 1)))
                log.warning(
                    "Hub %s failed (%s), retry %d/%d in %.1f s", what, status or type(err).__name__, attempt, self.max_retries, delay
                )
                self.sleep(delay)


# -- publishing -------------------------------------------------------------------------------
@dataclass(slots=True)
class PublishReport:
    user: str
    datasets: dict[str, str]
    commits: dict[str, str] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)
    private: bool = True
    published_at: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "user": self.user,
            "datasets": self.datasets,
            "commits": self.commits,
            "rows": self.rows,
            "private": self.private,
            "published_at": self.published_at,
        }


def _read(run_dir: Path, name: str, default: Any) -> Any:
    path = run_dir / name
    if not path.exists():
        return default
    return json.loads(path.read_text("utf-8"))


class HubPublisher:
    def __init__(self, token: str, private: bool = True, endpoint: str | None = None, retry: HubRetry | None = None) -> None:
        from huggingface_hub import HfApi

        self.api = HfApi(endpoint=endpoint, token=token, library_name="smoltrace", library_version=__version__)
        self.private = private
        self.retry = retry or HubRetry()

    def whoami(self) -> str:
        info = self.retry.call("whoami", self.api.whoami)
        name = info.get("name") if isinstance(info, dict) else None
        if not name:
            raise PublishError("the Hub token does not identify a user")
        return str(name)

    def _commit(self, repo_id: str, files: Mapping[str, bytes], message: str, private: bool) -> str:
        from huggingface_hub import CommitOperationAdd

        self.retry.call(
            f"create_repo {repo_id}", lambda: self.api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        )
        operations = [CommitOperationAdd(path_in_repo=path, path_or_fileobj=data) for path, data in files.items()]
        info = self.retry.call(
            f"commit to {repo_id}",
            lambda: self.api.create_commit(repo_id, operations=operations, commit_message=message, repo_type="dataset"),
        )
        return str(getattr(info, "oid", "") or "")

    def publish(self, run_dir: Path, user: str | None = None) -> PublishReport:
        """Publish a run folder; raises PublishError (the folder is untouched either way)."""
        from huggingface_hub.errors import HfHubHTTPError

        metadata = _read(run_dir, "metadata.json", None)
        results = _read(run_dir, "results.json", None)
        if metadata is None or results is None:
            raise PublishError(f"{run_dir} is not a finished smoltrace run folder (metadata.json and results.json are needed)")
        traces = _read(run_dir, "traces.json", [])
        metric_rows = _read(run_dir, "metrics_rows.json", [])
        board = _read(run_dir, "leaderboard_row.json", {})
        try:
            user = user or self.whoami()
            names = dataset_names(user, run_timestamp(metadata))
            report = PublishReport(user=user, datasets=names, private=self.private)
            run_id = str(metadata.get("run_id") or "")
            if not results:
                raise PublishError(f"{run_dir} has no results to publish")
            # datasets cannot load a Parquet file of 0 rows: a run without traces publishes no traces
            # dataset (the leaderboard says so), and one without GPU samples publishes a single row
            # whose GPU columns are null (SMOLTRACE users expect a metrics dataset for every run).
            if not traces:
                names["traces"] = ""
            if not metric_rows:
                metric_rows = [{"run_id": run_id, "service_name": "smoltrace-eval", "timestamp": metadata.get("started_at")}]
            board = dict(
                board,
                submitted_by=user,
                results_dataset=names["results"],
                traces_dataset=names["traces"] or None,
                metrics_dataset=names["metrics"],
            )
            tables = {"results": to_table(results, RESULTS_SCHEMA), "metrics": to_table(metric_rows, METRICS_SCHEMA)}
            if traces:
                tables["traces"] = traces_table(traces)
            for kind, table in tables.items():
                card = render_card(kind, table, metadata, names)
                files = {DATA_FILE: parquet_bytes(table), "README.md": card.encode("utf-8")}
                report.commits[kind] = self._commit(
                    names[kind], files, f"smoltrace {kind} for run {run_id} ({metadata.get('model')})", self.private
                )
                report.rows[kind] = table.num_rows
            board_table = to_table([board], LEADERBOARD_SCHEMA)
            files = {f"data/{_safe(run_id)}.parquet": parquet_bytes(board_table)}
            if not self._has_card(names["leaderboard"]):
                files["README.md"] = render_card("leaderboard", board_table, metadata, names).encode("utf-8")
            report.commits["leaderboard"] = self._commit(
                names["leaderboard"], files, f"smoltrace leaderboard row for run {run_id} ({metadata.get('model')})", self.private
            )
            report.rows["leaderboard"] = 1
        except HfHubHTTPError as err:
            raise PublishError(f"the Hub answered {_status(err) or ''} {str(err).splitlines()[0]}".strip()) from err
        except (OSError, ValueError) as err:
            raise PublishError(f"publishing failed: {type(err).__name__}: {err}") from err
        report.published_at = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        return report

    def _has_card(self, repo_id: str) -> bool:
        try:
            return bool(self.api.file_exists(repo_id, "README.md", repo_type="dataset"))
        except Exception:  # noqa: BLE001 - a missing repo, or no answer: write the card
            return False


def _safe(run_id: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in run_id) or "run"
