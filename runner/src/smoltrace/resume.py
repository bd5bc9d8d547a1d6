"""`--resume RUN_DIR`: a run folder is data, never configuration that reaches the network or widens
execution.

- What the run *is* (model, provider, agent type, dataset, revision, split, difficulty, limit,
  shard, run id, max steps, seed, generation arguments, leaderboard labels) comes from the folder,
  validated by the command line's own validator (`build_parser` + `config_from_args`): the stored
  values are turned back into flags and parsed. A flag on this command line that says otherwise is
  refused (exit 2, naming the flags): a resume cannot become another run.
- How it *runs* (`--parallel-workers`, `--max-retries`, `--task-timeout`, `--shutdown-grace`,
  `--skip-preflight`, tokens, exporter access, console flags) comes from this invocation only.
- Budgets (`--max-tokens`, `--max-cost-usd`, `--max-energy-j`, `--max-co2-g`) only narrow a run:
  the folder's are kept (checked like the flags) unless this command line gives new ones.
- The folder is read through `RunFolder` and validated by the records (`RunMetadata`): a
  metadata.json that is not a valid record, or whose own fields contradict its stored config, is
  refused (exit 2, one line) before anything of it is used.
- What reaches the network or widens execution (`--api-base`, `--additional-imports`,
  `--enable-tools` and `--working-directory`, `--otlp-forward`, `--prompt-yml`, non-generation
  `--model-args` such as headers or keys, token files, visibility, the exporter address) is never
  read from the folder: when the run used one, this command line must give it again (exit 2 saying
  which), else the default applies.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from .config import ConfigError, EvalConfig, build_parser, config_from_args
from .records import RunMetadata
from .run_folder import METADATA, RunFolder, RunFolderError

# dest -> flag: what the run is; read from the folder, never changed by a resume
RUN_IDENTITY = {
    "model": "--model",
    "provider": "--provider",
    "agent_type": "--agent-type",
    "dataset_name": "--dataset-name",
    "dataset_revision": "--dataset-revision",
    "split": "--split",
    "difficulty": "--difficulty",
    "limit": "--limit",
    "shard": "--shard",
    "run_id": "--run-id",
    "max_steps": "--max-steps",
    "seed": "--seed",
}
BUDGETS = {"max_tokens": "--max-tokens", "max_cost_usd": "--max-cost-usd", "max_energy_j": "--max-energy-j", "max_co2_g": "--max-co2-g"}
LABELS = {"use_case": "--use-case", "team": "--team", "purpose": "--purpose", "suite_version": "--suite-version"}
# dest -> flag: reaches the network or widens execution; only from this command line
COMMAND_LINE_ONLY = {
    "api_base": "--api-base",
    "additional_imports": "--additional-imports",
    "enable_tools": "--enable-tools",
    "working_directory": "--working-directory",
    "otlp_forward": "--otlp-forward",
    "prompt_yml": "--prompt-yml",
}
# generation arguments a folder may carry (they change what the model says, not where it goes)
GENERATION_ARGS = frozenset(
    {
        "temperature",
        "top_p",
        "top_k",
        "min_p",
        "max_tokens",
        "max_new_tokens",
        "max_completion_tokens",
        "frequency_penalty",
        "presence_penalty",
        "repetition_penalty",
        "do_sample",
        "num_ctx",
        "stop",
        "seed",
        "reasoning_effort",
    }
)


def explicit_dests(argv: Sequence[str]) -> set[str]:
    """The settings this command line gives explicitly (not argparse defaults)."""
    parser = build_parser()
    for action in parser._actions:  # argparse has no public way to ask "was this flag given"
        action.default = argparse.SUPPRESS
    return set(vars(parser.parse_args(list(argv))))


def _flag_value(dest: str, value: Any) -> list[str]:
    if value is None:
        return []
    if dest == "shard":
        if isinstance(value, dict):
            value = [value.get("index"), value.get("count")]
        if not isinstance(value, list | tuple) or len(value) != 2:
            raise ConfigError(f"metadata.json: config.shard {value!r} is not [index, count]")
        return [f"{value[0]}/{value[1]}"]
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise ConfigError(f"metadata.json: config.{dest} {value!r} is not a valid value")
    return [str(value)]


def stored_argv(stored: dict[str, Any]) -> list[str]:
    """The run's identity as flags, `--flag=value` so that no stored value can read as a flag."""
    argv: list[str] = []
    for dest, flag in {**RUN_IDENTITY, **LABELS}.items():
        for value in _flag_value(dest, stored.get(dest)):
            argv.append(f"{flag}={value}")
    args = stored.get("model_args") or {}
    if not isinstance(args, dict):
        raise ConfigError("metadata.json: config.model_args is not a mapping")
    generation = [f"{k}={json.dumps(v)}" for k, v in args.items() if k in GENERATION_ARGS]
    if generation:
        argv += ["--model-args", *generation]
    return argv


def _same(dest: str, a: Any, b: Any) -> bool:
    if dest == "shard":
        return (tuple(a) if a else None) == (tuple(b) if b else None)
    return bool(a == b)


def _stored_budget(run_dir: Path, dest: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"--resume {run_dir}: metadata.json config.{dest} {value!r} is not a positive number")
    return int(value) if dest == "max_tokens" else float(value)


# what metadata.json says the run is, next to the config it stored: a folder that contradicts itself was edited
RECORD_IDENTITY = ("run_id", "model", "provider", "agent_type")


def stored_run(run_dir: Path) -> RunMetadata:
    """The run's record, validated by the records (`RunFolder.read_metadata`): a folder that is not
    a run, or whose metadata.json is not a valid `RunMetadata`, is one line (exit 2)."""
    try:
        meta = RunFolder.open(run_dir).read_metadata()
    except RunFolderError as err:
        raise ConfigError(f"--resume {run_dir}: {' '.join(str(err).split())}") from None
    if not meta.config:
        raise ConfigError(f"--resume {run_dir}: {METADATA} has no config")
    contradictions = [
        f"{name} {getattr(meta, name)!r} vs config.{name} {meta.config.get(name)!r}"
        for name in RECORD_IDENTITY
        if name in meta.config and meta.config.get(name) != getattr(meta, name)
    ]
    if contradictions:
        raise ConfigError(
            f"--resume {run_dir}: {METADATA} does not describe a valid run (it contradicts itself: {'; '.join(contradictions)})"
        )
    return meta


def resume_config(run_dir: Path, cli: EvalConfig, argv: Sequence[str]) -> EvalConfig:
    """This invocation's config for resuming `run_dir` (see the module's rules)."""
    meta = stored_run(run_dir)
    stored: dict[str, Any] = dict(meta.config)
    if meta.dataset_revision:
        stored["dataset_revision"] = meta.dataset_revision  # the commit actually read
    try:
        base = config_from_args(build_parser().parse_args(stored_argv(stored)))
    except (ConfigError, SystemExit) as err:
        detail = str(err) if isinstance(err, ConfigError) else "a stored setting is not a valid flag value"
        raise ConfigError(f"--resume {run_dir}: metadata.json does not describe a valid run ({detail})") from err

    given = explicit_dests(argv)
    changed = [RUN_IDENTITY[d] for d in RUN_IDENTITY if d in given and not _same(d, getattr(cli, d), getattr(base, d))]
    if "model_args" in given:
        changed += [
            f"--model-args {k}"
            for k, v in cli.model_args.items()
            if k in GENERATION_ARGS and k in base.model_args and base.model_args[k] != v
        ]
    if changed:
        raise ConfigError(
            f"--resume {run_dir}: {', '.join(changed)} would change what the run is; "
            "a resume continues the same run (start a new run instead, or drop these flags)"
        )
    needed = [flag for dest, flag in COMMAND_LINE_ONLY.items() if stored.get(dest) and dest not in given]
    secret_or_routing = sorted(k for k in (stored.get("model_args") or {}) if k not in GENERATION_ARGS and k not in cli.model_args)
    needed += [f"--model-args {k}=..." for k in secret_or_routing]
    if needed:
        raise ConfigError(
            f"--resume {run_dir}: this run used {', '.join(needed)}; give them again on this command line "
            "(a run folder never supplies settings that reach the network or widen execution)"
        )
    labels: dict[str, Any] = {d: getattr(cli, d) if d in given else getattr(base, d) for d in LABELS}
    budgets: dict[str, Any] = {d: getattr(cli, d) if d in given else _stored_budget(run_dir, d, stored.get(d)) for d in BUDGETS}
    output_format = cli.output_format or ("json" if stored.get("output_format") == "json" else "")
    return replace(
        cli,
        **{d: getattr(base, d) for d in RUN_IDENTITY},
        **labels,
        **budgets,
        model_args={**base.model_args, **cli.model_args},
        output_format=output_format,
        resume=str(run_dir),
        # how the run is measured stays what it was (a resume without the flag lost the GPU segment)
        enable_otel=cli.enable_otel or bool(stored.get("enable_otel")),
        enable_gpu_metrics=cli.enable_gpu_metrics or bool(stored.get("enable_gpu_metrics")),
        disable_gpu_metrics=cli.disable_gpu_metrics or bool(stored.get("disable_gpu_metrics")),
    )
