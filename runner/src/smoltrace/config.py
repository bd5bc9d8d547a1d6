"""`smoltrace-eval` flags -> a typed, validated `EvalConfig`. Light imports only (--help < 1 s)."""

from __future__ import annotations

import argparse
import ipaddress
import json
import math
import os
import re
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from . import __version__
from .redact import Redactor, redact_keys
from .tool_root import ToolRootError, check_tool_root

PROVIDERS = ("litellm", "inference", "transformers", "ollama")
AGENT_TYPES = ("tool", "code", "both")
PURPOSES = ("selection", "regression", "monitoring")
DEFAULT_DATASET = "default"
DEFAULT_OUTPUT_DIR = "smoltrace_results"
DEFAULT_SHUTDOWN_GRACE_S = 20.0  # in-flight tasks' grace on SIGTERM: inside Kubernetes' default 30 s with time to write
RUN_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}$")
OPTIONAL_TOOLS = ("read_file", "write_file", "list_directory", "python_interpreter")


_HOST_PORT = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[^:\s]+):\d{1,5}")


def _loopback(address: str) -> bool:
    host = address.rsplit(":", 1)[0].strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ConfigError(ValueError):
    """Bad flags: printed as one line, exit code 2."""


@dataclass(frozen=True, slots=True)
class EvalConfig:
    model: str
    provider: str = "litellm"
    agent_type: str = "both"
    dataset_name: str = DEFAULT_DATASET
    dataset_revision: str | None = None
    split: str = "train"
    difficulty: str | None = None
    limit: int | None = None
    shard: tuple[int, int] | None = None
    parallel_workers: int = 1
    run_id: str = ""
    output_format: str = "json"
    output_dir: str = DEFAULT_OUTPUT_DIR
    private: bool = True
    model_args: dict[str, Any] = field(default_factory=dict)
    api_base: str | None = None
    ollama_pull: bool = False
    max_steps: int = 6
    task_timeout: float | None = None
    max_retries: int = 3
    enable_otel: bool = False
    disable_gpu_metrics: bool = False
    enable_gpu_metrics: bool = False
    gpu_exporter: str | None = None
    gpus: str | None = None  # --gpus (else $SMOLTRACE_GPUS, read by gpu_scope)
    gpu_exporter_token_file: str | None = None
    gpu_exporter_tls_ca: str | None = None
    collector_address: str = "127.0.0.1:0"
    collector_advertise: str | None = None
    max_spill_mb: int = 1024
    collector_spill_dir: str | None = None
    otlp_forward: str | None = None
    otlp_forward_protocol: str = "grpc"
    enable_tools: tuple[str, ...] = ()
    working_directory: str | None = None
    prompt_yml: str | None = None
    additional_imports: tuple[str, ...] = ()
    use_case: str | None = None
    team: str | None = None
    purpose: str | None = None
    suite_version: str | None = None
    seed: int = 42
    quiet: bool = False
    debug: bool = False
    resume: str | None = None
    hf_token_file: str | None = None
    skip_preflight: bool = False
    shutdown_grace: float = DEFAULT_SHUTDOWN_GRACE_S
    max_tokens: int | None = None
    max_cost_usd: float | None = None
    max_energy_j: float | None = None
    max_co2_g: float | None = None

    def public_dict(self) -> dict[str, Any]:
        """Every setting, secrets redacted (for metadata.json and logs): secret-named model args
        at any depth, URL userinfo, credential shapes (the run's Redactor, without the environment)."""
        data = asdict(self)
        data["model_args"] = redact_mapping(self.model_args)
        data["enable_tools"] = list(self.enable_tools)
        data["additional_imports"] = list(self.additional_imports)
        redactor = Redactor.for_run(model_args=self.model_args, urls=(self.api_base, self.otlp_forward), environ={})
        return dict(redactor.data(data))


def redact_mapping(values: dict[str, Any]) -> dict[str, Any]:
    """Secret-named values replaced at any depth (see redact.secret_name)."""
    return dict(redact_keys(values))


def parse_model_args(items: Sequence[str] | None) -> dict[str, Any]:
    """KEY=VALUE pairs; values parsed as JSON (numbers, booleans, lists...), else kept as text."""
    out: dict[str, Any] = {}
    for item in items or ():
        if "=" not in item:
            raise ConfigError(f"--model-args expects KEY=VALUE, got {item!r}")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise ConfigError(f"--model-args: {key!r} is not a valid argument name")
        try:
            value: Any = json.loads(raw)
        except json.JSONDecodeError:
            value = {"true": True, "false": False}.get(raw.strip().lower(), raw)
        out[key] = value
    return out


def parse_shard(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match:
        raise ConfigError(f"--shard must be I/N (e.g. 0/4), got {text!r}")
    index, count = int(match.group(1)), int(match.group(2))
    if not 1 <= count <= 10_000 or not 0 <= index < count:
        raise ConfigError(f"--shard I/N needs 0 <= I < N <= 10000, got {text!r}")
    return index, count


def normalise_group(value: str | None) -> str | None:
    if value is None:
        return None
    text = re.sub(r"[^a-z0-9]+", "-", value.lower()).strip("-")
    return text or None


class _OneLineErrorParser(argparse.ArgumentParser):
    """A flag error is one line on stderr and exit code 2, like every other input error (argparse
    would print the whole usage, some 30 lines, first)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _OneLineErrorParser(
        prog="smoltrace-eval",
        description="Evaluate smolagents agents (ToolCallingAgent, CodeAgent) on a task dataset, with traces, "
        "GPU/energy/CO2 metrics and a leaderboard row.",
        epilog="Exit codes: 0 run completed (tasks may have failed), 1 internal error, 2 bad flags or dataset, "
        "3 model or server unreachable, credentials refused or unknown model (checked before any task runs; also a run stopped by a burst of auth errors), "
        "4 Hub publishing failed (local files complete; retry with `smoltrace-eval publish RUN_DIR`), "
        "130 interrupted by Ctrl-C, 143 by SIGTERM, 129 by SIGHUP (finished tasks are kept; continue with --resume).",
    )
    m = p.add_argument_group("model")
    m.add_argument("--model", help="model id (e.g. openai/gpt-4.1-nano, a local transformers folder, an Ollama model name)")
    m.add_argument("--provider", choices=PROVIDERS, default="litellm", help="where the model runs (default litellm)")
    m.add_argument("--api-base", help="model server URL (litellm, ollama: else $OLLAMA_HOST, else http://127.0.0.1:11434)")
    m.add_argument("--ollama-pull", action="store_true", help="ollama: pull the model if the server does not have it")
    m.add_argument("--model-args", nargs="+", metavar="KEY=VALUE", help="generation arguments, e.g. temperature=0 max_new_tokens=256")
    m.add_argument("--hf-token-file", help="read the Hugging Face token from this file (else $HF_TOKEN)")
    m.add_argument("--seed", type=int, default=42, help="random seed for local generation (default 42)")
    a = p.add_argument_group("agents")
    a.add_argument("--agent-type", choices=AGENT_TYPES, default="both", help="default both")
    a.add_argument("--max-steps", type=int, default=6, help="agent step budget (default 6)")
    a.add_argument("--enable-tools", nargs="+", metavar="TOOL", help=f"optional tools: {', '.join(OPTIONAL_TOOLS)}")
    a.add_argument(
        "--working-directory",
        help="folder the file tools may use (required with read_file, write_file, list_directory; not the output folder, home or a credentials folder)",
    )
    a.add_argument("--prompt-yml", help="YAML with max_steps, instructions, system_prompt, prompt_templates, ...")
    a.add_argument("--additional-imports", nargs="+", metavar="MODULE", help="modules a CodeAgent may import")
    d = p.add_argument_group("tasks")
    d.add_argument("--dataset-name", default=DEFAULT_DATASET, help="'default' (built-in tasks), a .json/.jsonl file, or a Hub dataset id")
    d.add_argument(
        "--dataset-revision", help="branch, tag or commit of a Hub dataset (default: its main branch; the commit used is recorded)"
    )
    d.add_argument("--split", default="train", help="split / key to read (default train)")
    d.add_argument("--difficulty", choices=("easy", "medium", "hard"), help="only tasks of this difficulty")
    d.add_argument("--limit", type=int, help="at most N tasks per agent type")
    d.add_argument(
        "--shard",
        metavar="I/N",
        help="run only the I-th of N deterministic slices of the executions (0-based; e.g. from JOB_COMPLETION_INDEX); "
        "give every shard the same --run-id, then combine them with `smoltrace-eval merge`",
    )
    x = p.add_argument_group("execution")
    x.add_argument("--parallel-workers", type=int, default=1, help="concurrent task executions (default 1)")
    x.add_argument("--task-timeout", type=float, help="seconds one task execution may take")
    x.add_argument("--max-retries", type=int, default=3, help="retries of a model call on 429/5xx/connection errors (default 3)")
    x.add_argument(
        "--shutdown-grace",
        type=float,
        default=DEFAULT_SHUTDOWN_GRACE_S,
        metavar="SECONDS",
        help=f"on SIGTERM/SIGHUP/Ctrl-C, how long running tasks may finish before they are stopped (default {DEFAULT_SHUTDOWN_GRACE_S:g}; "
        "a second signal stops them at once); what is done is always written",
    )
    x.add_argument(
        "--skip-preflight",
        action="store_true",
        help="no 1-token request to the model before the run (the provider, key and address are still checked)",
    )
    x.add_argument("--run-id", help="run id (default: a new UUID)")
    x.add_argument("--resume", metavar="RUN_DIR", help="continue a killed or interrupted run from its folder")
    t = p.add_argument_group("telemetry")
    t.add_argument("--enable-otel", action="store_true", help="trace every step with OpenTelemetry")
    t.add_argument("--disable-gpu-metrics", action="store_true", help="no GPU metrics (they are on by default for local providers)")
    t.add_argument(
        "--enable-gpu-metrics", action="store_true", help="GPU metrics for an API provider too (e.g. a local vLLM behind litellm)"
    )
    t.add_argument(
        "--gpu-exporter", metavar="HOST:PORT", help="GPU exporter sidecar to use (env SMOLTRACE_GPU_EXPORTER; default: start one locally)"
    )
    t.add_argument(
        "--gpus",
        metavar="LIST",
        help="the GPUs this run owns (its energy is measured on these): UUIDs, MIG UUIDs or NVML indices, comma-separated; "
        "'all' or 'none' (env SMOLTRACE_GPUS; default: NVIDIA_VISIBLE_DEVICES, else CUDA_VISIBLE_DEVICES, else where the model "
        "was placed, else every GPU the exporter sees)",
    )
    t.add_argument(
        "--gpu-exporter-token-file",
        metavar="FILE",
        help="bearer token for a --gpu-exporter started with --auth-token-file (env SMOLTRACE_GPU_EXPORTER_TOKEN_FILE)",
    )
    t.add_argument(
        "--gpu-exporter-tls-ca",
        metavar="PEM",
        help="talk TLS to --gpu-exporter and verify it against this CA certificate (env SMOLTRACE_GPU_EXPORTER_TLS_CA)",
    )
    t.add_argument(
        "--collector-address",
        default=os.environ.get("SMOLTRACE_COLLECTOR_ADDRESS", "127.0.0.1:0"),
        metavar="HOST:PORT",
        help="where the embedded OTLP collector listens (env SMOLTRACE_COLLECTOR_ADDRESS; default 127.0.0.1, any free port)",
    )
    t.add_argument(
        "--collector-advertise",
        default=os.environ.get("SMOLTRACE_COLLECTOR_ADVERTISE"),
        metavar="HOST:PORT",
        help="the collector address the GPU exporter should push to, when it differs from the bound one (containers)",
    )
    t.add_argument(
        "--max-spill-mb",
        type=int,
        default=int(os.environ.get("SMOLTRACE_COLLECTOR_MAX_SPILL_MB", "1024")),
        help="disk the embedded collector may spill a run's telemetry to; past it new data is dropped and counted (default 1024)",
    )
    t.add_argument(
        "--collector-spill-dir",
        default=os.environ.get("SMOLTRACE_COLLECTOR_SPILL_DIR"),
        metavar="DIR",
        help="where the embedded collector spills past its memory bound (env SMOLTRACE_COLLECTOR_SPILL_DIR; default a temporary "
        "folder: put it on disk, not a tmpfs, in containers)",
    )
    t.add_argument("--otlp-forward", metavar="URL", help="also send everything the collector receives to this OpenTelemetry Collector")
    t.add_argument(
        "--otlp-forward-protocol", choices=("grpc", "http/protobuf"), default="grpc", help="protocol for --otlp-forward (default grpc)"
    )
    b = p.add_argument_group("budgets (stop starting new tasks once the run has spent this much; exit 5; --resume with a higher one)")
    b.add_argument("--max-tokens", type=int, metavar="N", help="prompt + completion tokens of the whole run")
    b.add_argument("--max-cost-usd", type=float, metavar="USD", help="model API cost of the whole run (litellm prices)")
    b.add_argument("--max-energy-j", type=float, metavar="J", help="GPU energy of the whole run (needs GPU metrics)")
    b.add_argument("--max-co2-g", type=float, metavar="G", help="CO2 of the whole run in grams (needs GPU metrics)")
    o = p.add_argument_group("outputs")
    o.add_argument(
        "--output-format",
        choices=("hub", "json"),
        help="hub (default when a Hugging Face token is available) or json; local files are always written",
    )
    o.add_argument("--output-dir", default=DEFAULT_OUTPUT_DIR, help=f"where run folders go (default ./{DEFAULT_OUTPUT_DIR})")
    vis = o.add_mutually_exclusive_group()
    vis.add_argument("--private", dest="private", action="store_true", default=True, help="Hub datasets private (default)")
    vis.add_argument("--public", dest="private", action="store_false", help="Hub datasets public")
    o.add_argument("--use-case", help="leaderboard grouping")
    o.add_argument("--team", help="leaderboard grouping")
    o.add_argument("--purpose", choices=PURPOSES, help="leaderboard grouping")
    o.add_argument("--suite-version", help="leaderboard grouping")
    g = p.add_argument_group("console")
    g.add_argument("--quiet", action="store_true", help="no progress bar or summary table")
    g.add_argument("--debug", action="store_true", help="verbose logs")
    p.add_argument("--version", action="version", version=f"smoltrace {__version__}")
    return p


def config_from_args(args: argparse.Namespace) -> EvalConfig:
    if not args.model and not args.resume:
        raise ConfigError("--model is required (or --resume RUN_DIR)")
    if args.model is not None and not args.model.strip():
        raise ConfigError("--model must not be empty")
    if args.parallel_workers < 1 or args.parallel_workers > 256:
        raise ConfigError("--parallel-workers must be 1..256")
    if not 1 <= args.max_steps <= 100:
        raise ConfigError("--max-steps must be 1..100")
    if args.max_retries < 0 or args.max_retries > 20:
        raise ConfigError("--max-retries must be 0..20")
    if args.task_timeout is not None and not 0 < args.task_timeout <= 86_400:
        raise ConfigError("--task-timeout must be in (0, 86400] seconds")
    if not 0 <= args.shutdown_grace <= 3600:
        raise ConfigError("--shutdown-grace must be 0..3600 seconds")
    if args.limit is not None and args.limit < 1:
        raise ConfigError("--limit must be at least 1")
    shard = parse_shard(args.shard) if args.shard is not None else None
    run_id = args.run_id or str(uuid.uuid4())
    if not RUN_ID_PATTERN.match(run_id):
        raise ConfigError("--run-id: 1..128 characters of letters, digits and ._:/@+-, starting with a letter or digit")
    tools = tuple(dict.fromkeys(args.enable_tools or ()))
    unknown = [t for t in tools if t not in OPTIONAL_TOOLS]
    if unknown:
        raise ConfigError(f"--enable-tools: unknown tool(s) {', '.join(unknown)}; available: {', '.join(OPTIONAL_TOOLS)}")
    if args.working_directory is not None and not Path(args.working_directory).is_dir():
        raise ConfigError(f"--working-directory {args.working_directory}: not a folder")
    try:
        check_tool_root(tools, args.working_directory, args.output_dir, extra_protected=[args.hf_token_file])
    except ToolRootError as err:
        raise ConfigError(str(err)) from err
    if args.hf_token_file is not None and not Path(args.hf_token_file).is_file():
        raise ConfigError(f"--hf-token-file {args.hf_token_file}: no such file")
    if args.gpu_exporter is not None and not re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[^:\s]+):\d{1,5}", args.gpu_exporter):
        raise ConfigError(f"--gpu-exporter must be HOST:PORT, got {args.gpu_exporter!r}")
    gpus = _gpus(args.gpus)
    for flag, env, value in (
        ("--gpu-exporter-token-file", "SMOLTRACE_GPU_EXPORTER_TOKEN_FILE", args.gpu_exporter_token_file),
        ("--gpu-exporter-tls-ca", "SMOLTRACE_GPU_EXPORTER_TLS_CA", args.gpu_exporter_tls_ca),
    ):
        path = value if value is not None else os.environ.get(env) or None
        if path is not None and not Path(path).is_file():
            raise ConfigError(f"{flag if value is not None else env} {path}: no such file")
    for flag, value in (("--collector-address", args.collector_address), ("--collector-advertise", args.collector_advertise)):
        if value is not None and not _HOST_PORT.fullmatch(value):
            raise ConfigError(f"{flag} must be HOST:PORT, got {value!r}")
    if not 1 <= args.max_spill_mb <= 1_048_576:
        raise ConfigError("--max-spill-mb must be 1..1048576")
    if args.collector_advertise is None and not _loopback(args.collector_address):
        raise ConfigError(
            f"--collector-address {args.collector_address} listens beyond loopback: give --collector-advertise HOST:PORT "
            "(the collector then takes only this run's bearer token) or bind 127.0.0.1"
        )
    if args.otlp_forward is not None and (not args.otlp_forward.strip() or any(c.isspace() for c in args.otlp_forward)):
        raise ConfigError(f"--otlp-forward must be a URL or HOST:PORT, got {args.otlp_forward!r}")
    for module in args.additional_imports or ():
        if not re.fullmatch(r"[A-Za-z_][\w.]*(\.\*)?", module):
            raise ConfigError(f"--additional-imports: {module!r} is not a module name")
    for flag, value in (
        ("--max-tokens", args.max_tokens),
        ("--max-cost-usd", args.max_cost_usd),
        ("--max-energy-j", args.max_energy_j),
        ("--max-co2-g", args.max_co2_g),
    ):
        if value is not None and not (math.isfinite(value) and value > 0):
            raise ConfigError(f"{flag} must be a positive number, got {value}")
    return EvalConfig(
        model=(args.model or "").strip(),
        provider=args.provider,
        agent_type=args.agent_type,
        dataset_name=args.dataset_name,
        dataset_revision=args.dataset_revision,
        split=args.split,
        difficulty=args.difficulty,
        limit=args.limit,
        shard=shard,
        parallel_workers=args.parallel_workers,
        run_id=run_id,
        output_format=args.output_format or "",
        output_dir=args.output_dir,
        private=args.private,
        model_args=parse_model_args(args.model_args),
        api_base=args.api_base,
        ollama_pull=args.ollama_pull,
        max_steps=args.max_steps,
        task_timeout=args.task_timeout,
        max_retries=args.max_retries,
        enable_otel=args.enable_otel,
        disable_gpu_metrics=args.disable_gpu_metrics,
        enable_gpu_metrics=args.enable_gpu_metrics,
        gpu_exporter=args.gpu_exporter,
        gpus=gpus,
        gpu_exporter_token_file=args.gpu_exporter_token_file,
        gpu_exporter_tls_ca=args.gpu_exporter_tls_ca,
        collector_address=args.collector_address,
        collector_advertise=args.collector_advertise,
        max_spill_mb=args.max_spill_mb,
        collector_spill_dir=args.collector_spill_dir,
        otlp_forward=args.otlp_forward,
        otlp_forward_protocol=args.otlp_forward_protocol,
        enable_tools=tools,
        working_directory=args.working_directory,
        prompt_yml=args.prompt_yml,
        additional_imports=tuple(args.additional_imports or ()),
        use_case=normalise_group(args.use_case),
        team=normalise_group(args.team),
        purpose=args.purpose,
        suite_version=normalise_group(args.suite_version),
        seed=args.seed,
        quiet=args.quiet,
        debug=args.debug,
        resume=args.resume,
        hf_token_file=args.hf_token_file,
        skip_preflight=args.skip_preflight,
        shutdown_grace=args.shutdown_grace,
        max_tokens=args.max_tokens,
        max_cost_usd=args.max_cost_usd,
        max_energy_j=args.max_energy_j,
        max_co2_g=args.max_co2_g,
    )


def _gpus(flag: str | None) -> str | None:
    """--gpus, else $SMOLTRACE_GPUS: syntax checked here, devices against the exporter later."""
    from .gpu_scope import ENV_GPUS, validate_gpus_flag

    value, name = (flag, "--gpus") if flag is not None else (os.environ.get(ENV_GPUS), ENV_GPUS)
    if value is None:
        return None
    try:
        validated = validate_gpus_flag(value)
    except ValueError as err:
        raise ConfigError(str(err).replace("--gpus", name, 1)) from err
    return validated if flag is not None else None


def read_hf_token(config: EvalConfig) -> str | None:
    if config.hf_token_file:
        try:
            token = Path(config.hf_token_file).read_text("utf-8").strip()
        except OSError as err:
            raise ConfigError(f"--hf-token-file {config.hf_token_file}: {err.strerror}") from err
        if not token:
            raise ConfigError(f"--hf-token-file {config.hf_token_file} is empty")
        return token
    return os.environ.get("HF_TOKEN") or None


def run_redactor(config: EvalConfig, hf_token: str | None) -> Redactor:
    """The run's one Redactor: the environment's secrets, the HF token, secret-named model args at
    any depth, and the userinfo of the model server and forward URLs."""
    return Redactor.for_run(model_args=config.model_args, urls=(config.api_base, config.otlp_forward), tokens=(hf_token,))
