"""One evaluation run, end to end: tasks -> model -> GPU session -> executions -> local outputs.

Order: validate everything that can be validated (dataset, prompt config, model reachability)
before any task runs; create the run folder and its metadata; run; write results, leaderboard
row and metadata. A killed run leaves its checkpoint; `--resume` picks up from it.
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
from typing import Any

from rich.console import Console

from . import __version__
from .agents import AgentSettings, PromptConfig, load_prompt_config
from .budget import EXIT_BUDGET, BudgetTracker, budgets_of, check_enforceable, prior_spend
from .budget import STATUS as BUDGET_STATUS
from .config import EvalConfig, run_redactor
from .executor import Execution, Executor, TaskResult
from .gpu import ExporterAccess, GpuSession, decide, otel_console_line, sampling_run_id
from .gpu_scope import ScopeInputs, remote_host
from .models import ModelSpec, RetryPolicy, build_model, warm_up
from .outputs import (
    LEADERBOARD_ROW,
    METADATA,
    METRIC_ROWS,
    METRICS,
    RESULTS,
    TRACES,
    Checkpoint,
    enrich_rows,
    iso,
    leaderboard_row,
    order_rows,
    read_json,
    result_row,
    run_dir_name,
    utc_now,
    write_json_atomic,
)
from .preflight import check_reachable, check_setup, probe
from .progress import RunProgress, summary_table
from .redact import Redactor
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
    rows: list[dict[str, Any]]
    interrupted: bool
    metadata: dict[str, Any] = field(default_factory=dict)
    stop: StopReason | None = None  # why the run ended early (signal, auth errors, budget)
    already_complete: bool = False  # --resume of a completed run: nothing was run or rewritten

    @property
    def passed(self) -> int:
        return sum(1 for r in self.rows if r.get("success"))


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
        self.shutdown = shutdown or Shutdown(config.shutdown_grace)

    def say(self, text: str) -> None:
        if not self.config.quiet:
            self.console.print(self.redactor.scrub(text), highlight=False, markup=False)

    def warn(self, text: str) -> None:
        print(self.redactor.scrub(f"[WARN] {text}"), flush=True)

    # -- steps before any task runs -----------------------------------------------------------
    def prepare(self) -> tuple[TaskSet, list[Execution], PromptConfig]:
        cfg = self.config
        task_set = load_tasks(cfg.dataset_name, cfg.dataset_revision, cfg.split, self.hf_token)
        executions = plan(task_set, cfg)
        if not executions:
            raise NothingToRunError(f"no task matches {describe_filters(cfg)} in {task_set.source} ({len(task_set.tasks)} tasks)")
        prompt = load_prompt_config(cfg.prompt_yml) if cfg.prompt_yml else PromptConfig()
        return task_set, executions, prompt

    def run(self) -> RunOutcome:
        cfg = self.config
        started = utc_now()
        task_set, executions, prompt = self.prepare()
        complete = self._already_complete(executions)
        if complete is not None:
            return complete
        self._check_budgets()
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
        gpu = self._gpu_session(decision)
        try:
            # which GPUs the run owns, before the run folder exists: GPUs the exporter does not see are exit 2
            gpu.open(model=model, remote_server=self._remote_model_server())
            return self._run(task_set, executions, prompt, spec, target, model, decision, gpu, started)
        finally:
            gpu.stop()  # every exit path: the summary is kept (Ctrl-C included), then the local exporter goes

    def _check_budgets(self) -> None:
        """Budgets this run could not enforce are refused before anything runs (BudgetError)."""
        from .costs import cost_source

        cfg = self.config
        budgets = budgets_of(cfg)
        if budgets:
            decision = decide(cfg.provider, cfg.disable_gpu_metrics, cfg.enable_gpu_metrics)
            priced = cost_source(cfg.provider, cfg.model) != "unknown"
            check_enforceable(budgets, gpu_metrics=decision.enabled, gpu_reason=decision.reason, cost_priced=priced, model=cfg.model)

    def _gpu_session(self, decision: Any) -> GpuSession:
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

    def _remote_model_server(self) -> str | None:
        """An Ollama server on another host: its GPUs are not this machine's."""
        cfg = self.config
        if cfg.provider != "ollama":
            return None
        return remote_host(cfg.api_base or os.environ.get("OLLAMA_HOST"))

    def _run(
        self,
        task_set: TaskSet,
        executions: list[Execution],
        prompt: PromptConfig,
        spec: ModelSpec,
        target: str,
        model: Any,
        decision: Any,
        gpu: GpuSession,
        started: Any,
    ) -> RunOutcome:
        cfg = self.config
        run_dir, done_rows, started = self._run_dir(started)
        previous_meta = self._previous_metadata(run_dir)
        checkpoint = Checkpoint(run_dir)
        done = {r["test_case_uid"] for r in done_rows}
        todo = [e for e in executions if e.uid not in done]
        meta = self._metadata(task_set, started, run_dir, decision.enabled, decision.reason)
        meta["gpu_scope"] = gpu.report.scope
        meta["segment_settings"] = self._segment_settings(run_dir)
        meta["status"] = "running"
        write_json_atomic(run_dir / METADATA, self.redactor.data(meta))
        self.shutdown.armed = True  # from here a signal stops the run and writes what is done
        self.say(f"smoltrace {__version__}: run {cfg.run_id}")
        self.say(f"  model    {target}")
        self.say(
            f"  tasks    {len(executions)} executions from {task_set.source} ({len(done_rows)} already done)"
            if done_rows
            else f"  tasks    {len(executions)} executions from {task_set.source}"
        )
        self.say(f"  output   {run_dir}")
        if cfg.output_format == "hub":
            self.say(f"  publish  Hugging Face Hub ({'private' if cfg.private else 'public'} datasets) after the run")
        elif self.hf_token:
            self.say("  publish  no (--output-format json)")
        else:
            self.say("  publish  no: local JSON only (no Hugging Face token; set HF_TOKEN or --hf-token-file to publish)")

        warm_up(spec, model)
        if cfg.provider == "ollama":
            meta["model_placement"] = self._ollama_placement(spec)
        settings = AgentSettings(
            max_steps=cfg.max_steps,
            additional_imports=cfg.additional_imports,
            prompt=prompt,
            extra_tools=cfg.enable_tools,
            working_directory=Path(cfg.working_directory) if cfg.working_directory else None,
        )
        extra_tools = self._extra_tools_factory(settings)
        telemetry = RunTelemetrySession(cfg, decision.enabled, self.redactor, gpu_sampling_id=gpu.sampling_id)
        telemetry.start()
        for line in gpu.report.notes:
            print(line, flush=True)
        gpu.start(otlp_endpoint=telemetry.advertised_endpoint or "", otlp_headers=telemetry.otlp_headers)
        if gpu.report.warning and decision.enabled:
            self.warn(f"GPU metrics: {gpu.report.warning}")

        executor = Executor(model, settings, cfg.parallel_workers, cfg.task_timeout, extra_tools, tracing=telemetry.tracing)
        progress = RunProgress(self.console, len(todo), enabled=not cfg.quiet)
        new_rows: list[dict[str, Any]] = []
        auth_burst = AuthErrorBurst()
        budget = BudgetTracker(budgets_of(cfg), prior=prior_spend(done_rows, previous_meta), live_gpu=gpu.live)
        if any(b.kind.kind in ("energy_j", "co2_g") for b in budget.budgets) and not gpu.report.gpu_available:
            why = gpu.report.warning or "the exporter measures no GPU for this run"
            self.shutdown.request(StopReason("budget", f"energy/CO2 budgets need GPU metrics, and there are none ({why})", "failed", 2))
        self._check_spend(budget)

        def on_result(result: TaskResult) -> None:
            row = self.redactor.data(result_row(result, cfg.model, cfg.run_id, cfg.provider))
            checkpoint.append(row)
            new_rows.append(row)
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
            budget.add(row)
            self._check_spend(budget)

        active_start = time.perf_counter()
        startup_s = active_start - self.process_t0
        with progress:
            executor.run(todo, on_result, self.shutdown)
        active_s = time.perf_counter() - active_start
        gpu_report = gpu.stop()  # the exporter flushes the run's last samples to the collector first
        collected = telemetry.finish()

        rows = self.redactor.data(order_rows([*done_rows, *new_rows]))  # a checkpoint written before redaction too
        telemetry.report["rows"] = enrich_rows(rows, collected.traces, collected.energy_series, gpu_report.summary)
        lost = telemetry.report["rows"]["rows_without_trace"]
        if lost:
            telemetry.report["warnings"].append(f"{len(lost)} execution(s) have no trace (spans lost): {', '.join(lost[:10])}")
            self.warn(f"{len(lost)} execution(s) have no trace in traces.json (spans did not reach the collector)")
        interrupted = executor.interrupted
        stop = self.shutdown.reason if interrupted else None
        finished = utc_now()
        status = stop.status if stop else "interrupted" if interrupted else "completed"
        write_json_atomic(run_dir / RESULTS, rows)
        write_json_atomic(run_dir / TRACES, self.redactor.data(collected.traces))
        write_json_atomic(run_dir / METRICS, collected.metrics_json or {"run_id": cfg.run_id, "resourceMetrics": []})
        write_json_atomic(run_dir / METRIC_ROWS, collected.metric_rows)
        board = leaderboard_row(
            rows,
            run_id=cfg.run_id,
            model=cfg.model,
            agent_type=cfg.agent_type,
            provider=cfg.provider,
            dataset_used=task_set.source,
            submitted_by="local",
            grouping={"use_case": cfg.use_case, "team": cfg.team, "purpose": cfg.purpose, "suite_version": cfg.suite_version},
            datasets={
                "results": f"local:{run_dir / RESULTS}",
                "traces": f"local:{run_dir / TRACES}" if collected.traces else "local:none",
                "metrics": f"local:{run_dir / METRICS}",
            },
            gpu_summary=gpu_report.summary,
            timestamp=finished,
            status=status,
        )
        write_json_atomic(run_dir / LEADERBOARD_ROW, board)
        spend = budget.final_spend(rows, gpu_report.summary)
        meta.update(
            status=status,
            stop_reason=stop.as_dict() if stop else None,
            spend=spend.as_dict(),
            budget=budget.report(spend) if stop is not None and stop.status == BUDGET_STATUS else None,
            finished_at=iso(finished),
            num_results=len(rows),
            num_planned=len(executions),
            passed=sum(1 for r in rows if r.get("success")),
            gpu_metrics=gpu_report.as_dict(),
            telemetry=telemetry.report,
            timings={"startup_s": round(startup_s, 3), "active_s": round(active_s, 3), "executions_this_process": len(new_rows)},
        )
        write_json_atomic(run_dir / METADATA, self.redactor.data(meta))
        try:
            from .report import write_report

            write_report(run_dir)
        except Exception as err:  # the report is a view; the data files are already written
            log.debug("report failed", exc_info=True)
            self.warn(f"report.html could not be written: {type(err).__name__}: {err}")
        if not cfg.quiet:
            self.console.print(summary_table(rows, gpu_report.summary))
        return RunOutcome(run_dir, rows, interrupted, meta, stop)

    def _segment_settings(self, run_dir: Path) -> list[dict[str, Any]]:
        """How each process of the run ran (a --resume may change these, never what the run is)."""
        cfg = self.config
        previous: list[dict[str, Any]] = []
        if cfg.resume:
            try:
                stored = read_json(run_dir / METADATA).get("segment_settings") or []
                previous = [s for s in stored if isinstance(s, dict)]
            except (OSError, ValueError, AttributeError):
                previous = []
        current = {
            "index": len(previous),
            "started_at": iso(utc_now()),
            "resume": bool(cfg.resume),
            "api_base": cfg.api_base,
            "parallel_workers": cfg.parallel_workers,
            "max_retries": cfg.max_retries,
            "task_timeout": cfg.task_timeout,
            "shutdown_grace": cfg.shutdown_grace,
            "skip_preflight": cfg.skip_preflight,
        }
        return [*previous, current]

    def _check_spend(self, budget: BudgetTracker) -> None:
        """The first budget the run's spend has reached stops dispatch; running executions finish."""
        hit = budget.exhausted()
        if hit is not None and self.shutdown.request(
            StopReason("budget", hit.describe(), BUDGET_STATUS, EXIT_BUDGET, wait_for_running=True)
        ):
            budget.hit = hit

    def _previous_metadata(self, run_dir: Path) -> dict[str, Any] | None:
        if not self.config.resume:
            return None
        try:
            previous = read_json(run_dir / METADATA)
        except (OSError, ValueError):
            return None
        return previous if isinstance(previous, dict) else None

    def _already_complete(self, executions: list[Execution]) -> RunOutcome | None:
        """--resume of a run that completed: say so, run nothing, rewrite nothing."""
        cfg = self.config
        if not cfg.resume:
            return None
        run_dir = Path(cfg.resume)
        try:
            meta = read_json(run_dir / METADATA)
        except (OSError, ValueError):
            return None
        if meta.get("status") != "completed" or not (run_dir / RESULTS).is_file():
            return None
        rows = read_json(run_dir / RESULTS)
        done = {r.get("test_case_uid") for r in rows if isinstance(r, dict)}
        if any(e.uid not in done for e in executions):
            return None
        return RunOutcome(run_dir, rows, False, meta, already_complete=True)

    def _extra_tools_factory(self, settings: AgentSettings) -> Any:
        if not self.config.enable_tools:
            return None
        from .tools import optional_tools

        root = settings.working_directory.resolve() if settings.working_directory else None
        names = self.config.enable_tools
        imports = settings.authorized_imports()
        return lambda tool_log: optional_tools(names, root, imports, tool_log)

    def _run_dir(self, started: Any) -> tuple[Path, list[dict[str, Any]], Any]:
        cfg = self.config
        if cfg.resume:
            run_dir = Path(cfg.resume)
            # an auth error says nothing about the model: those executions run again
            rows = [r for r in Checkpoint(run_dir).load() if r.get("error_type") != "auth_error"]
            try:
                previous = read_json(run_dir / METADATA)
                from datetime import datetime

                started = datetime.fromisoformat(previous["started_at"].replace("Z", "+00:00"))
            except (OSError, ValueError, KeyError):
                pass
            return run_dir, rows, started
        name = run_dir_name(cfg.model, cfg.agent_type, started)
        if cfg.shard is not None:
            name = f"{name}_shard-{cfg.shard[0]}-of-{cfg.shard[1]}"
        run_dir = Path(cfg.output_dir) / name
        suffix = 1
        while run_dir.exists():
            suffix += 1
            run_dir = Path(cfg.output_dir) / f"{name}_{suffix}"
        run_dir.mkdir(parents=True)
        return run_dir, [], started

    def _metadata(self, task_set: TaskSet, started: Any, run_dir: Path, gpu_enabled: bool, gpu_reason: str) -> dict[str, Any]:
        from .costs import cost_source

        cfg = self.config
        return {
            "run_id": cfg.run_id,
            "model": cfg.model,
            "provider": cfg.provider,
            "agent_type": cfg.agent_type,
            "dataset_used": task_set.source,
            "dataset_revision": task_set.revision,
            "dataset_sha256": task_set.sha256,
            "cost_source": cost_source(cfg.provider, cfg.model),
            "split": cfg.split,
            "num_tasks_in_dataset": len(task_set.tasks),
            "seed": cfg.seed,
            "shard": {"index": cfg.shard[0], "count": cfg.shard[1]} if cfg.shard else None,
            "started_at": iso(started),
            "run_dir": str(run_dir),
            "config": cfg.public_dict(),
            "command": self.redactor.data([redact_arg(a) for a in sys.argv]),
            "versions": versions(),
            "git": git_sha(),
            "platform": {"system": platform.system(), "machine": platform.machine(), "python": sys.version.split()[0]},
            "gpu_metrics": {"enabled": gpu_enabled, "reason": gpu_reason},
            "otel": {"enabled": cfg.enable_otel, "console": otel_console_line(gpu_enabled) if cfg.enable_otel else None},
        }


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
