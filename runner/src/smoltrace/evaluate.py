"""One evaluation run, as one-way stages with typed hand-offs:

    plan -> model -> sessions -> execute -> collect -> enrich -> write

- plan: the task set, the executions (a shard's slice), the prompt config — all validated before
  anything else;
- model: preflight and the loaded model (before the run folder exists: a model that cannot load
  leaves nothing behind);
- sessions: the run folder (`RunFolder`: new, or the one being resumed), this process's segment,
  metadata `running`, telemetry (collector, tracing) and the GPU session;
- execute: the executions not in the checkpoint, each appended to it as it finishes;
- collect: stop GPU sampling, flush spans, and end this process's segment in the run folder;
- enrich: the run's telemetry is the union of its segments (`RunFolder.union`): traces, per-task
  energy, tokens into the rows;
- write: integrity checks, then results, traces, metrics, leaderboard row, metadata, report.
Warnings go through one `Notices` (printed once, recorded in metadata `notices`).
"""

from __future__ import annotations

import logging
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any, Literal

from rich.console import Console

from . import __version__
from .agents import AgentSettings, PromptConfig, load_prompt_config
from .budget import EXIT_BUDGET, BudgetTracker, budgets_of, check_enforceable, prior_spend
from .budget import STATUS as BUDGET_STATUS
from .collector import RunTelemetry
from .config import EvalConfig, run_redactor
from .costs import cost_source
from .executor import Execution, Executor, TaskResult
from .gpu import ExporterAccess, GpuDecision, GpuSession, GpuSessionReport, decide, otel_console_line, sampling_run_id
from .gpu_scope import ScopeInputs, remote_host
from .integrity import check_run
from .models import ModelSpec, RetryPolicy, build_model, warm_up
from .notices import Notices
from .outputs import enrich_rows, leaderboard_row, result_row, segment_energy
from .preflight import check_reachable, check_setup, probe
from .progress import RunProgress, summary_table
from .records import GpuSummary, MetricRow, ResultRow, RunMetadata, SegmentInfo, SegmentSettings, TraceDoc, order_rows
from .redact import Redactor
from .run_folder import METADATA, RESULTS, RunFolder, RunFolderError, RunUnion, SegmentData, iso, parse_iso, run_dir_name, utc_now
from .shutdown import AuthErrorBurst, Shutdown, StopReason
from .tasks import TaskSet, load_tasks, select
from .telemetry_session import RunTelemetrySession

log = logging.getLogger(__name__)

VERSIONED = (
    "smoltrace",
    "smoltrace-gpu-exporter",
    "smolagents",
    "transformers",
    "torch",
    "litellm",
    "huggingface_hub",
    "opentelemetry-sdk",
    "genai-otel-instrument",
)


class NothingToRunError(ValueError):
    """The flags select no execution: a bad flag (exit 2), not an empty run."""


@dataclass(slots=True)
class RunOutcome:
    run_dir: Path
    rows: list[ResultRow]
    interrupted: bool
    metadata: RunMetadata | None = None
    stop: StopReason | None = None  # why the run ended early (signal, auth errors, budget)
    already_complete: bool = False  # --resume of a completed run: nothing was run or rewritten

    @property
    def passed(self) -> int:
        return sum(1 for r in self.rows if r.success)


# -- the stages' hand-offs --------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RunPlan:
    task_set: TaskSet
    executions: list[Execution]
    prompt: PromptConfig


@dataclass(frozen=True, slots=True)
class LoadedModel:
    spec: ModelSpec
    target: str
    model: Any
    gpu: GpuDecision


@dataclass(slots=True)
class Sessions:
    folder: RunFolder
    segment: SegmentInfo
    done_rows: list[ResultRow]
    todo: list[Execution]
    meta: RunMetadata
    telemetry: RunTelemetrySession
    gpu: GpuSession
    settings: AgentSettings
    previous_meta: dict[str, Any] | None = None  # a resumed run's metadata as it was (its spend)


@dataclass(slots=True)
class Executed:
    new_rows: list[ResultRow]
    interrupted: bool
    startup_s: float
    active_s: float
    stop: StopReason | None = None
    budget: BudgetTracker | None = None


@dataclass(slots=True)
class Collected:
    telemetry: RunTelemetry
    gpu_report: GpuSessionReport
    gpu_summary: GpuSummary | None
    segment: SegmentData


@dataclass(slots=True)
class Enriched:
    rows: list[ResultRow]
    union: RunUnion
    rows_report: dict[str, Any] = field(default_factory=dict)


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in VERSIONED:
        try:
            out[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_sha() -> dict[str, Any]:
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=5
            ).stdout.strip()
        )
        return {"sha": sha, "dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"sha": None, "dirty": None}


def plan(task_set: TaskSet, config: EvalConfig) -> list[Execution]:
    """The executions of the run, in a stable order; with --shard I/N, every N-th from the I-th.
    Indices are those of the whole plan, so shards merge back into the unsharded order."""
    agent_types = ("tool", "code") if config.agent_type == "both" else (config.agent_type,)
    executions: list[Execution] = []
    for agent_type in agent_types:
        for task in select(task_set.tasks, agent_type, config.difficulty, config.limit):
            executions.append(Execution(task, agent_type, len(executions)))
    if config.shard is not None:
        index, count = config.shard
        executions = [e for e in executions if e.index % count == index]
    return executions


def describe_filters(config: EvalConfig) -> str:
    parts = [f"--agent-type {config.agent_type}"] if config.agent_type != "both" else []
    if config.difficulty:
        parts.append(f"--difficulty {config.difficulty}")
    if config.shard:
        parts.append(f"--shard {config.shard[0]}/{config.shard[1]}")
    return " ".join(parts) or "the flags"


class Evaluation:
    def __init__(
        self,
        config: EvalConfig,
        hf_token: str | None,
        console: Console,
        process_t0: float,
        redactor: Redactor | None = None,
        shutdown: Shutdown | None = None,
    ) -> None:
        self.config = config
        self.hf_token = hf_token
        self.console = console
        self.process_t0 = process_t0
        # every row, metadata document, trace and console line of the run goes through it
        self.redactor = redactor if redactor is not None else run_redactor(config, hf_token)
        self.notices = Notices(scrub=self.redactor.scrub)
        self.shutdown = shutdown or Shutdown(config.shutdown_grace)

    def say(self, text: str) -> None:
        if not self.config.quiet:
            self.console.print(self.redactor.scrub(text), highlight=False, markup=False)

    def warn(self, text: str) -> None:
        self.notices.warn(text)

    def run(self) -> RunOutcome:
        started = utc_now()
        run_plan = self.plan()
        complete = self._already_complete(run_plan.executions)
        if complete is not None:
            return complete
        self._check_budgets()
        loaded = self.load_model()
        gpu = self._gpu_session(loaded.gpu)
        try:
            # which GPUs the run owns, before the run folder exists: GPUs the exporter does not see are exit 2
            gpu.open(model=loaded.model, remote_server=self._remote_model_server())
            sessions = self.open_sessions(run_plan, loaded, gpu, started)
            executed = self.execute(sessions, loaded)
            collected = self.collect(sessions, executed)
            enriched = self.enrich(sessions, executed)
            return self.write(run_plan, sessions, executed, collected, enriched)
        finally:
            gpu.stop()  # every exit path: the summary is kept (Ctrl-C included), then the local exporter goes

    def _check_budgets(self) -> None:
        """Budgets this run could not enforce are refused before anything runs (BudgetError)."""
        cfg = self.config
        budgets = budgets_of(cfg)
        if budgets:
            decision = decide(cfg.provider, cfg.disable_gpu_metrics, cfg.enable_gpu_metrics)
            priced = cost_source(cfg.provider, cfg.model) != "unknown"
            check_enforceable(budgets, gpu_metrics=decision.enabled, gpu_reason=decision.reason, cost_priced=priced, model=cfg.model)

    def _check_spend(self, budget: BudgetTracker) -> None:
        """The first budget the run's spend has reached stops dispatch; running executions finish."""
        hit = budget.exhausted()
        if hit is not None and self.shutdown.request(
            StopReason("budget", hit.describe(), BUDGET_STATUS, EXIT_BUDGET, wait_for_running=True)
        ):
            budget.hit = hit

    def _gpu_session(self, decision: GpuDecision) -> GpuSession:
        cfg = self.config
        return GpuSession(
            decision,
            cfg.run_id,
            sampling_id=sampling_run_id(cfg.run_id, cfg.shard),
            resource_attributes={
                "smoltrace.model": cfg.model,
                "smoltrace.provider": cfg.provider,
                "smoltrace.agent_type": cfg.agent_type,
                "smoltrace.run_id": cfg.run_id,
            },
            access=ExporterAccess.from_env(cfg.gpu_exporter, cfg.gpu_exporter_token_file, cfg.gpu_exporter_tls_ca),
            scope_inputs=ScopeInputs.read(cfg.gpus, os.environ),
        )

    def _ollama_placement(self, spec: ModelSpec) -> dict[str, Any] | None:
        """Load the model and ask the server where it sits; a model on the CPU is a [WARN]: the
        GPU metrics then measure nothing of it."""
        from .models import ollama_base
        from .ollama_server import load, placement

        base = ollama_base(spec.api_base)
        try:
            load(base, spec.model)
            where = placement(base, spec.model)
        except Exception as err:  # the run goes on; its first chat call will say what is wrong
            log.debug("ollama ps failed", exc_info=True)
            self.warn(f"could not ask the Ollama server where the model sits ({type(err).__name__}: {err})")
            return None
        if where is None:
            self.warn(f"the Ollama server at {base} does not list {spec.model} as loaded; model placement unknown")
        elif where["placement"] == "cpu":
            self.warn(f"Ollama runs {where['model']} on the CPU (size_vram 0): the GPU metrics measure nothing of it")
        elif where["placement"] == "split":
            self.warn(f"Ollama holds {where['gpu_share']:.0%} of {where['model']} on the GPU, the rest on the CPU")
        return where

    def _segment_settings(self) -> SegmentSettings:
        """How this process runs its part of the run (a --resume may change these, never what the run is)."""
        cfg = self.config
        settings = SegmentSettings(
            api_base=cfg.api_base,
            gpu_exporter=cfg.gpu_exporter,
            parallel_workers=cfg.parallel_workers,
            max_retries=cfg.max_retries,
            task_timeout=cfg.task_timeout,
            shutdown_grace=cfg.shutdown_grace,
            skip_preflight=cfg.skip_preflight,
        )
        # segment.json is a run file like metadata.json: the URL's userinfo password never reaches it
        return SegmentSettings.model_validate(self.redactor.data(settings.to_json()))

    def _remote_model_server(self) -> str | None:
        """An Ollama server on another host: its GPUs are not this machine's."""
        cfg = self.config
        if cfg.provider != "ollama":
            return None
        return remote_host(cfg.api_base or os.environ.get("OLLAMA_HOST"))

    def _clean_meta(self, meta: RunMetadata) -> RunMetadata:
        return RunMetadata.model_validate(self.redactor.data(meta.to_json()))

    def _clean_row(self, row: ResultRow) -> ResultRow:
        return ResultRow.model_validate(self.redactor.data(row.to_json()))

    # -- plan ---------------------------------------------------------------------------------
    def plan(self) -> RunPlan:
        cfg = self.config
        task_set = load_tasks(cfg.dataset_name, cfg.dataset_revision, cfg.split, self.hf_token)
        executions = plan(task_set, cfg)
        if not executions:
            raise NothingToRunError(f"no task matches {describe_filters(cfg)} in {task_set.source} ({len(task_set.tasks)} tasks)")
        prompt = load_prompt_config(cfg.prompt_yml) if cfg.prompt_yml else PromptConfig()
        return RunPlan(task_set, executions, prompt)

    def prepare(self) -> tuple[TaskSet, list[Execution], PromptConfig]:
        """The plan as a tuple (kept for callers of the earlier API)."""
        p = self.plan()
        return p.task_set, p.executions, p.prompt

    # -- model --------------------------------------------------------------------------------
    def load_model(self) -> LoadedModel:
        cfg = self.config
        spec = ModelSpec(
            cfg.provider,
            cfg.model,
            cfg.api_base,
            cfg.model_args,
            self.hf_token,
            cfg.task_timeout,
            cfg.seed,
            parallel_workers=cfg.parallel_workers,
            ollama_pull=cfg.ollama_pull,
        )
        retry = RetryPolicy(max_retries=cfg.max_retries)
        target = check_setup(spec)
        if cfg.skip_preflight:
            check_reachable(spec)
        # built (weights loaded) before the run folder exists: a model that cannot load leaves nothing behind
        model = build_model(spec, retry)
        if not cfg.skip_preflight:
            checked = probe(spec, model, retry)
            if checked.warning:
                self.warn(checked.warning)
        decision = decide(cfg.provider, cfg.disable_gpu_metrics, cfg.enable_gpu_metrics)
        if decision.console:
            print(decision.console, flush=True)
        return LoadedModel(spec, target, model, decision)

    def _warn_exporter_changed(self, earlier: list[SegmentInfo]) -> None:
        """A resume is never given the exporter address by the folder (it reaches the network): when
        an earlier segment sampled a remote exporter and this one does not, say that the run's GPU
        figures now cover only the segments that measured, instead of letting the total look whole."""
        remote = sorted({s.settings.gpu_exporter for s in earlier if s.settings and s.settings.gpu_exporter})
        if remote and not self.config.gpu_exporter:
            self.warn(
                f"an earlier segment of this run sampled the GPU exporter at {', '.join(remote)}; this process was not "
                "given --gpu-exporter, so the run's GPU energy covers only the segments that measured "
                "(give --gpu-exporter again to measure this one)"
            )

    # -- sessions -----------------------------------------------------------------------------
    def open_sessions(self, run_plan: RunPlan, loaded: LoadedModel, gpu: GpuSession, started: Any) -> Sessions:
        cfg = self.config
        folder, done_rows, started = self._run_folder(started)
        previous = folder.read_json(METADATA) if cfg.resume else None
        previous_meta = previous if isinstance(previous, dict) else None
        kind: Literal["first", "resume", "shard"] = "resume" if cfg.resume else ("shard" if cfg.shard is not None else "first")
        shard = {"index": cfg.shard[0], "count": cfg.shard[1]} if cfg.shard else None
        earlier = folder.segments() if cfg.resume else []
        segment = folder.begin_segment(kind, iso(utc_now()), shard, self._segment_settings())
        self._warn_exporter_changed(earlier)
        done = {r.test_case_uid for r in done_rows}
        todo = [e for e in run_plan.executions if e.uid not in done]
        meta = self._metadata(run_plan, started, folder.path, loaded.gpu.enabled, loaded.gpu.reason).with_(gpu_scope=gpu.report.scope)
        folder.write_metadata(self._clean_meta(meta.with_(status="running", segments=folder.segments())))
        self.shutdown.armed = True  # from here a signal stops the run and writes what is done
        self._header(run_plan, loaded, folder, done_rows)

        warm_up(loaded.spec, loaded.model)
        if cfg.provider == "ollama":
            meta = meta.with_(model_placement=self._ollama_placement(loaded.spec))
        settings = AgentSettings(
            max_steps=cfg.max_steps,
            additional_imports=cfg.additional_imports,
            prompt=run_plan.prompt,
            extra_tools=cfg.enable_tools,
            working_directory=Path(cfg.working_directory) if cfg.working_directory else None,
        )
        telemetry = RunTelemetrySession(cfg, loaded.gpu.enabled, self.redactor, notices=self.notices, gpu_sampling_id=gpu.sampling_id)
        telemetry.start()
        for line in gpu.report.notes:
            print(line, flush=True)
        gpu.start(otlp_endpoint=telemetry.advertised_endpoint or "", otlp_headers=telemetry.otlp_headers)
        if gpu.report.warning and loaded.gpu.enabled:
            self.notices.warn(f"GPU metrics: {gpu.report.warning}")
        return Sessions(folder, segment, done_rows, todo, meta, telemetry, gpu, settings, previous_meta)

    def _header(self, run_plan: RunPlan, loaded: LoadedModel, folder: RunFolder, done_rows: list[ResultRow]) -> None:
        cfg = self.config
        n, source = len(run_plan.executions), run_plan.task_set.source
        self.say(f"smoltrace {__version__}: run {cfg.run_id}")
        self.say(f"  model    {loaded.target}")
        self.say(
            f"  tasks    {n} executions from {source} ({len(done_rows)} already done)"
            if done_rows
            else f"  tasks    {n} executions from {source}"
        )
        self.say(f"  output   {folder.path}")
        if cfg.shard is not None and cfg.output_format == "hub":
            self.say(f"  publish  not by a shard: `smoltrace-eval merge` publishes the run once all {cfg.shard[1]} shards are done")
        elif cfg.output_format == "hub":
            self.say(f"  publish  Hugging Face Hub ({'private' if cfg.private else 'public'} datasets) after the run")
        elif self.hf_token:
            self.say("  publish  no (--output-format json)")
        else:
            self.say("  publish  no: local JSON only (no Hugging Face token; set HF_TOKEN or --hf-token-file to publish)")

    # -- execute ------------------------------------------------------------------------------
    def execute(self, sessions: Sessions, loaded: LoadedModel) -> Executed:
        cfg = self.config
        extra_tools = self._extra_tools_factory(sessions.settings)
        executor = Executor(
            loaded.model, sessions.settings, cfg.parallel_workers, cfg.task_timeout, extra_tools, tracing=sessions.telemetry.tracing
        )
        progress = RunProgress(self.console, len(sessions.todo), enabled=not cfg.quiet)
        auth_burst = AuthErrorBurst()
        start_offset = sessions.folder.checkpoint.offset()
        gpu = sessions.gpu
        budget = BudgetTracker(
            budgets_of(cfg), prior=prior_spend([r.to_json() for r in sessions.done_rows], sessions.previous_meta), live_gpu=gpu.live
        )
        if any(b.kind.kind in ("energy_j", "co2_g") for b in budget.budgets) and not gpu.report.gpu_available:
            why = gpu.report.warning or "the exporter measures no GPU for this run"
            self.shutdown.request(StopReason("budget", f"energy/CO2 budgets need GPU metrics, and there are none ({why})", "failed", 2))
        self._check_spend(budget)

        def on_result(result: TaskResult) -> None:
            row = self._clean_row(result_row(result, cfg.model, cfg.run_id, cfg.provider))
            sessions.folder.checkpoint.append(row)
            progress.advance(result)
            if auth_burst.observe(result.error_type):
                self.shutdown.request(
                    StopReason(
                        "auth_error",
                        f"the first {auth_burst.count} executions all failed with auth errors: the model server refuses the credentials",
                        "failed",
                        3,
                    )
                )
            budget.add(row.to_json())
            self._check_spend(budget)

        active_start = time.perf_counter()
        startup_s = active_start - self.process_t0
        with progress:
            executor.run(sessions.todo, on_result, self.shutdown)
        active_s = time.perf_counter() - active_start
        # the checkpoint is the record of what finished: this segment's rows are the lines it appended
        new_rows = sessions.folder.checkpoint.load(after=start_offset)
        stop = self.shutdown.reason if executor.interrupted else None
        return Executed(new_rows, executor.interrupted, startup_s, active_s, stop, budget)

    # -- collect ------------------------------------------------------------------------------
    def collect(self, sessions: Sessions, executed: Executed) -> Collected:
        """Stop sampling and flush spans, then end this process's segment in the run folder."""
        gpu_report = sessions.gpu.stop()  # the exporter flushes the run's last samples to the collector first
        telemetry = sessions.telemetry.finish()
        summary = GpuSummary.model_validate(gpu_report.summary) if gpu_report.summary else None
        energy, co2_per_j = segment_energy(executed.new_rows, telemetry.energy_series, summary)
        info = sessions.segment.with_(
            status=executed.stop.status if executed.stop else "interrupted" if executed.interrupted else "completed",
            finished_at=iso(utc_now()),
            executed=[r.test_case_uid for r in executed.new_rows],
            traced=sessions.telemetry.tracing is not None,
            gpu_summary=summary,
            task_energy_j=energy,
            co2_per_joule=co2_per_j,
            timings={"startup_s": round(executed.startup_s, 3), "active_s": round(executed.active_s, 3)},
            telemetry={k: v for k, v in sessions.telemetry.report.items() if k != "warnings"},
        )
        traces = [TraceDoc.model_validate(d) for d in self.redactor.data(telemetry.traces)]
        telemetry.traces.clear()  # the records hold the traces now: the collector's copy goes (peak memory)
        data = SegmentData(
            info,
            traces,
            list((telemetry.metrics_json or {}).get("resourceMetrics") or []),
            [MetricRow.model_validate(r) for r in telemetry.metric_rows],
        )
        sessions.folder.end_segment(data)
        return Collected(telemetry, gpu_report, summary, data)

    # -- enrich -------------------------------------------------------------------------------
    def enrich(self, sessions: Sessions, executed: Executed) -> Enriched:
        union = sessions.folder.union()
        # a checkpoint written before redaction is redacted too
        done = [self._clean_row(r) for r in sessions.done_rows]
        rows, report = enrich_rows(order_rows([*done, *executed.new_rows]), union)
        killed = report.lost_with_killed_segment
        other = [u for u in report.rows_without_trace if u not in set(killed)]
        if killed:
            self.notices.warn(
                f"{len(killed)} execution(s) have no trace: their process was killed before it could save its spans "
                f"({', '.join(killed[:10])})"
            )
        if other:
            self.notices.warn(
                f"{len(other)} execution(s) have no trace in traces.json (spans did not reach the collector): {', '.join(other[:10])}"
            )
        return Enriched(rows, union, report.as_dict())

    # -- write --------------------------------------------------------------------------------
    def write(self, run_plan: RunPlan, sessions: Sessions, executed: Executed, collected: Collected, enriched: Enriched) -> RunOutcome:
        cfg = self.config
        union = enriched.union
        folder = sessions.folder
        rows = enriched.rows
        finished = utc_now()
        stop = executed.stop
        status = stop.status if stop else "interrupted" if executed.interrupted else "completed"
        board = leaderboard_row(
            rows,
            run_id=cfg.run_id,
            model=cfg.model,
            agent_type=cfg.agent_type,
            provider=cfg.provider,
            dataset_used=run_plan.task_set.source,
            submitted_by="local",
            grouping={"use_case": cfg.use_case, "team": cfg.team, "purpose": cfg.purpose, "suite_version": cfg.suite_version},
            datasets=folder.local_datasets(bool(union.traces)),
            gpu_summary=union.gpu_summary,
            timestamp=finished,
            status=status,
        )
        telemetry_report = dict(sessions.telemetry.report)
        telemetry_report["rows"] = enriched.rows_report
        telemetry_report["warnings"] = self.notices.messages
        gpu_metrics = collected.gpu_report.as_dict()
        gpu_metrics["summary"] = union.gpu_summary.to_json() if union.gpu_summary else None
        if len(union.segments) > 1:
            gpu_metrics["per_segment"] = [s.gpu_summary.to_json() if s.gpu_summary else None for s in union.segments]
        spend = executed.budget.final_spend([r.to_json() for r in rows], collected.gpu_report.summary) if executed.budget else None
        meta = sessions.meta.with_(
            status=status,
            spend=spend.as_dict() if spend else None,
            budget=executed.budget.report(spend)
            if executed.budget and spend and stop is not None and stop.status == BUDGET_STATUS
            else None,
            stop_reason=stop.as_dict() if stop else None,
            finished_at=iso(finished),
            num_results=len(rows),
            num_planned=len(run_plan.executions),
            passed=sum(1 for r in rows if r.success),
            gpu_metrics=gpu_metrics,
            telemetry=telemetry_report,
            timings={
                "startup_s": round(executed.startup_s, 3),
                "active_s": round(executed.active_s, 3),
                "executions_this_process": len(executed.new_rows),
            },
            segments=union.segments,
        )
        integrity = check_run(
            rows,
            union.traces,
            meta,
            union.gpu_summary,
            traced=union.traced,
            lost_with_killed_segment=enriched.rows_report.get("lost_with_killed_segment", []),
        )
        if not integrity.ok and not executed.interrupted:
            for finding in integrity.errors:
                self.notices.warn(f"integrity: {finding.message}")
        meta = self._clean_meta(meta.with_(integrity=integrity, notices=self.notices.messages))
        problem = folder.write_final(rows, union, meta, board)
        if problem:
            log.debug("report failed: %s", problem)
            self.notices.warn(f"report.html could not be written: {problem}")
            meta = self._clean_meta(meta.with_(notices=self.notices.messages))
            folder.write_metadata(meta)
        if not cfg.quiet:
            self.console.print(summary_table([r.to_json() for r in rows], union.gpu_summary.to_json() if union.gpu_summary else None))
        return RunOutcome(folder.path, rows, executed.interrupted, meta, stop)

    def _already_complete(self, executions: list[Execution]) -> RunOutcome | None:
        """--resume of a run that completed: say so, run nothing, rewrite nothing."""
        cfg = self.config
        if not cfg.resume:
            return None
        folder = RunFolder(Path(cfg.resume))
        try:
            meta = folder.read_metadata()
            if meta.status != "completed" or not folder.has(RESULTS):
                return None
            rows = folder.read_results()
        except RunFolderError:
            return None
        done = {r.test_case_uid for r in rows}
        if any(e.uid not in done for e in executions):
            return None
        return RunOutcome(folder.path, rows, False, meta, already_complete=True)

    def _extra_tools_factory(self, settings: AgentSettings) -> Any:
        if not self.config.enable_tools:
            return None
        from .tools import optional_tools

        root = settings.working_directory.resolve() if settings.working_directory else None
        names = self.config.enable_tools
        imports = settings.authorized_imports()
        return lambda tool_log: optional_tools(names, root, imports, tool_log)

    def _run_folder(self, started: Any) -> tuple[RunFolder, list[ResultRow], Any]:
        cfg = self.config
        if cfg.resume:
            folder = RunFolder(Path(cfg.resume))
            # an auth error says nothing about the model: those executions run again
            rows = [r for r in folder.checkpoint.load() if r.error_type != "auth_error"]
            try:
                started = parse_iso(folder.read_metadata().started_at) or started
            except ValueError:
                pass
            return folder, rows, started
        folder = RunFolder.create(Path(cfg.output_dir), run_dir_name(cfg.model, cfg.agent_type, started, cfg.shard))
        return folder, [], started

    def _metadata(self, run_plan: RunPlan, started: Any, run_dir: Path, gpu_enabled: bool, gpu_reason: str) -> RunMetadata:
        cfg = self.config
        task_set = run_plan.task_set
        return RunMetadata(
            run_id=cfg.run_id,
            model=cfg.model,
            provider=cfg.provider,
            agent_type=cfg.agent_type,
            dataset_used=task_set.source,
            dataset_revision=task_set.revision,
            dataset_sha256=task_set.sha256,
            split=cfg.split,
            cost_source=cost_source(cfg.provider, cfg.model),
            num_tasks_in_dataset=len(task_set.tasks),
            num_planned=len(run_plan.executions),
            seed=cfg.seed,
            shard={"index": cfg.shard[0], "count": cfg.shard[1]} if cfg.shard else None,
            started_at=iso(started),
            run_dir=str(run_dir),
            config=cfg.public_dict(),
            command=self.redactor.data([redact_arg(a) for a in sys.argv]),
            versions=versions(),
            git=git_sha(),
            platform={"system": platform.system(), "machine": platform.machine(), "python": sys.version.split()[0]},
            gpu_metrics={"enabled": gpu_enabled, "reason": gpu_reason},
            otel={"enabled": cfg.enable_otel, "console": otel_console_line(gpu_enabled) if cfg.enable_otel else None},
        )


def redact_arg(arg: str) -> str:
    """A command-line word with a secret-named KEY=VALUE's value replaced; a JSON value
    (`extra_headers={"Authorization": ...}`) keeps its shape with the secret fields replaced."""
    import json

    from .redact import REDACTED, redact_keys, secret_name

    if "=" in arg:
        key, value = arg.split("=", 1)
        if secret_name(key.lstrip("-")):
            return f"{key}={REDACTED}"
        if value[:1] in "{[":
            try:
                return f"{key}={json.dumps(redact_keys(json.loads(value)), ensure_ascii=False)}"
            except ValueError:
                pass
    return arg
