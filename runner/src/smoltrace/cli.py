"""`smoltrace-eval`: evaluate smolagents agents. Heavy libraries are imported only after the flags
are checked, so `--help` and flag errors answer at once."""

from __future__ import annotations

import time

PROCESS_T0 = time.perf_counter()

import argparse  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import TYPE_CHECKING, Any  # noqa: E402

from .config import ConfigError, EvalConfig, build_parser, config_from_args, read_hf_token  # noqa: E402

if TYPE_CHECKING:
    from .shutdown import Shutdown

EXIT_OK, EXIT_INTERNAL, EXIT_INPUT, EXIT_UNREACHABLE, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


def check_output_dir(output_dir: str) -> None:
    """--output-dir must be (or become) a writable folder: checked before any start-up work."""
    path = Path(output_dir).expanduser()
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        what = "is not a folder" if probe == path else f"cannot be created: {probe} is not a folder"
        raise ConfigError(f"--output-dir {output_dir} {what}")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"--output-dir {output_dir}: {probe} is not writable")


def _quiet_libraries(debug: bool) -> None:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "debug" if debug else "error")
    if not debug:
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    for noisy in ("LiteLLM", "litellm", "httpx", "urllib3", "transformers", "accelerate"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if debug else logging.ERROR)


def error(message: str) -> None:
    from .redact import scrub

    print(scrub(f"smoltrace-eval: error: {message}"), file=sys.stderr, flush=True)


EXIT_PUBLISH_FAILED = 4


def resolve_output_format(config: EvalConfig, hf_token: str | None) -> EvalConfig:
    """hub when a token is available, else json (with a notice); hub without a token is an error."""
    from dataclasses import replace

    if config.output_format == "hub" and not hf_token:
        raise ConfigError(
            "--output-format hub needs a Hugging Face token: set HF_TOKEN or pass --hf-token-file (or use --output-format json)"
        )
    if not config.output_format:
        if hf_token:
            return replace(config, output_format="hub")
        return replace(config, output_format="json")
    return config


def publish_run(run_dir: Path, token: str, private: bool, user: str | None = None, *, force: bool = False) -> int:
    """Publish a run folder; prints the datasets, or why not and how to retry."""
    from .hub import HubPublisher, PublishRefused, describe_failure
    from .run_folder import PUBLISH, RunFolder, RunFolderError

    try:
        report = HubPublisher(token, private=private).publish(run_dir, user, force=force)
    except PublishRefused as err:
        error(f"not published: {err}")
        for finding in err.findings:
            print(f"  - {finding}", file=sys.stderr, flush=True)
        return EXIT_INPUT
    except Exception as err:  # every Hub failure is one line (the files stay as they are)
        logging.getLogger(__name__).debug("publishing failed", exc_info=True)
        what, bad_token = describe_failure(err)
        error(f"publishing to the Hub failed: {what}")
        print(f"The local results are complete in {run_dir}; publish them later with:  smoltrace-eval publish {run_dir}", flush=True)
        return EXIT_INPUT if bad_token else EXIT_PUBLISH_FAILED
    folder = RunFolder(run_dir)
    try:
        folder.write_json(PUBLISH, report.as_dict())
        meta = folder.read_metadata()
        folder.write_metadata(meta.with_(published=report.as_dict()))
    except (OSError, RunFolderError):
        pass
    for kind, repo in report.datasets.items():
        if not repo:
            continue
        print(f"Published {kind:<11} https://huggingface.co/datasets/{repo} ({report.rows.get(kind, 0)} rows)", flush=True)
    return EXIT_OK


def _hub_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--hf-token-file", help="read the token from this file (else $HF_TOKEN)")
    visibility = parser.add_mutually_exclusive_group()
    visibility.add_argument("--private", dest="private", action="store_true", default=None, help="private datasets (the default)")
    visibility.add_argument("--public", dest="private", action="store_false")


def _token(hf_token_file: str | None) -> str | None:
    probe = EvalConfig(model="-", hf_token_file=hf_token_file)
    return read_hf_token(probe)


def publish_main(argv: Sequence[str]) -> int:
    """`smoltrace-eval publish RUN_DIR`: publish (or re-publish) a run folder to the Hub."""
    parser = argparse.ArgumentParser(
        prog="smoltrace-eval publish", description="Publish a run folder to the Hugging Face Hub (idempotent)."
    )
    parser.add_argument("run_dir", help="the run folder (with metadata.json and results.json)")
    _hub_flags(parser)
    parser.add_argument("--force", action="store_true", help="publish even if the run fails its integrity checks")
    args = parser.parse_args(argv)
    from .run_folder import RunFolder, RunFolderError

    run_dir = Path(args.run_dir)
    try:
        RunFolder.open(run_dir, finished=True).read_metadata()
    except RunFolderError as err:
        error(str(err))
        return EXIT_INPUT
    # the folder is data: the token file and the visibility come from this command line only
    try:
        token = _token(args.hf_token_file)
    except ConfigError as err:
        error(str(err))
        return EXIT_INPUT
    if not token:
        error("publishing needs a Hugging Face token: set HF_TOKEN or pass --hf-token-file")
        return EXIT_INPUT
    _quiet_libraries(False)
    private = args.private if args.private is not None else True
    return publish_run(run_dir, token, private, force=args.force)


def merge_main(argv: Sequence[str]) -> int:
    """`smoltrace-eval merge OUT_DIR SHARD_DIR...`: one run folder from the shards of a run; with a
    Hugging Face token (or --output-format hub) the merged run is published — a shard never is."""
    parser = argparse.ArgumentParser(
        prog="smoltrace-eval merge", description="Combine the run folders of a sharded run (--shard I/N) into one."
    )
    parser.add_argument("out_dir", help="the merged run folder to write")
    parser.add_argument("shard_dirs", nargs="+", help="the shards' run folders")
    parser.add_argument(
        "--output-format", choices=("json", "hub"), default=None, help="hub: publish the merged run (default when a token is set)"
    )
    parser.add_argument(
        "--allow-partial",
        action="store_true",
        help="merge even when shards are missing or did not complete; the run is marked partial (metadata, leaderboard status, report)",
    )
    _hub_flags(parser)
    args = parser.parse_args(argv)
    from .merge import MergeError, merge_runs
    from .run_folder import RunFolder

    try:
        token = _token(args.hf_token_file)
    except ConfigError as err:
        error(str(err))
        return EXIT_INPUT
    if args.output_format == "hub" and not token:
        error("--output-format hub needs a Hugging Face token: set HF_TOKEN or pass --hf-token-file (or use --output-format json)")
        return EXIT_INPUT
    try:
        out = merge_runs(Path(args.out_dir), [Path(d) for d in args.shard_dirs], allow_partial=args.allow_partial)
    except MergeError as err:
        error(str(err))
        return EXIT_INPUT
    meta = RunFolder(out).read_metadata()
    print(f"Merged {len(args.shard_dirs)} shard(s) into {out} ({meta.passed}/{meta.num_results} passed)", flush=True)
    if meta.partial:
        print(f"[WARN] partial run (--allow-partial): {meta.partial}", flush=True)
    publish = args.output_format == "hub" or (args.output_format is None and token is not None)
    if publish and token:
        _quiet_libraries(False)
        private = args.private if args.private is not None else True
        return publish_run(out, token, private)
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "publish":
        return publish_main(argv[1:])
    if argv and argv[0] == "merge":
        return merge_main(argv[1:])
    if argv and argv[0] == "compare":
        from .compare import main as compare_main

        return compare_main(argv[1:])
    if argv and argv[0] == "leaderboard":
        from .leaderboard import main as leaderboard_main

        return leaderboard_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
        if config.resume:
            from pathlib import Path

            from .resume import resume_config
            from .run_folder import METADATA, RunFolder, RunFolderError

            run_dir = Path(config.resume)
            try:
                RunFolder.open(run_dir)
            except RunFolderError:
                raise ConfigError(f"--resume {run_dir}: not a smoltrace run folder (no {METADATA})") from None
            config = resume_config(run_dir, config, argv)
        hf_token = read_hf_token(config)
        config = resolve_output_format(config, hf_token)
        if not config.resume:
            check_output_dir(config.output_dir)
    except ConfigError as err:
        error(str(err))
        return EXIT_INPUT
    from .config import run_redactor
    from .redact import install_log_redaction, uninstall_log_redaction

    redactor = run_redactor(config, hf_token)
    install_log_redaction(redactor)  # the --debug log, every library's logger included
    try:
        return _run(config, hf_token, redactor)
    finally:
        uninstall_log_redaction()


def _run(config: EvalConfig, hf_token: str | None, redactor: Any) -> int:
    _quiet_libraries(config.debug)
    hub_user = None
    if config.output_format == "hub" and config.shard is None:  # a bad token is found before any task runs
        from .hub import HubPublisher, PublishError

        try:
            from .hub import HubRetry

            hub_user = HubPublisher(hf_token or "", private=config.private, retry=HubRetry(max_retries=2, max_delay_s=5.0)).whoami()
        except PublishError as err:
            error(f"cannot publish to the Hub: {err}")
            return EXIT_INPUT
        except Exception as err:  # noqa: BLE001 - HTTP errors of every kind: one line, no traceback
            status = getattr(getattr(err, "response", None), "status_code", None)
            error(
                f"cannot publish to the Hub: {'the token was refused' if status in (401, 403) else type(err).__name__}: {str(err).splitlines()[0]}"
            )
            return EXIT_INPUT

    from .shutdown import Shutdown

    shutdown = Shutdown(config.shutdown_grace)
    with shutdown.handling_signals():
        return _evaluate(config, hf_token, hub_user, redactor, shutdown)


def _evaluate(config: EvalConfig, hf_token: str | None, hub_user: str | None, redactor: Any, shutdown: Shutdown) -> int:
    from rich.console import Console

    from .agents import PromptConfigError
    from .budget import BudgetError
    from .evaluate import Evaluation, NothingToRunError
    from .gpu_scope import GpuScopeError
    from .models import ModelSetupError
    from .tasks import DatasetError

    console = Console(stderr=False)
    evaluation = Evaluation(config, hf_token, console, PROCESS_T0, redactor, shutdown)
    try:
        outcome = evaluation.run()
    except DatasetError as err:
        error(err.render())
        return EXIT_INPUT
    except (PromptConfigError, GpuScopeError, NothingToRunError, BudgetError) as err:
        error(str(err))
        return EXIT_INPUT
    except ModelSetupError as err:
        error(str(err))
        return err.exit_code
    except KeyboardInterrupt:
        error("interrupted before the run started")
        return shutdown.reason.exit_code if shutdown.reason else EXIT_INTERRUPTED
    except Exception as err:
        logging.getLogger(__name__).debug("internal error", exc_info=True)
        error(f"internal error: {type(err).__name__}: {err} (rerun with --debug for details)")
        return EXIT_INTERNAL
    total = len(outcome.rows)
    if outcome.already_complete:
        print(f"Nothing to resume: {outcome.run_dir} is complete ({outcome.passed}/{total} passed); no file was changed", flush=True)
        return EXIT_OK
    print(f"Results: {outcome.run_dir} ({outcome.passed}/{total} passed)", flush=True)
    if (outcome.run_dir / "report.html").exists() and not config.quiet:
        print(f"Report:  {outcome.run_dir / 'report.html'}", flush=True)
    if outcome.stop is not None and outcome.stop.kind != "signal":
        error(f"run stopped: {outcome.stop.detail}; nothing was published")
        budget = (outcome.metadata.budget if outcome.metadata is not None else None) or {}
        if budget.get("flag"):
            print(
                f"No new task was started once the budget was reached; the running ones finished. Continue with a higher budget:"
                f"  smoltrace-eval --resume {outcome.run_dir} {budget['flag']} <more than {budget['limit']:g}>",
                flush=True,
            )
        else:
            print(f"Fix the cause, then continue with  smoltrace-eval --resume {outcome.run_dir}", flush=True)
        return outcome.stop.exit_code
    if outcome.interrupted:
        print(f"Interrupted: continue with  smoltrace-eval --resume {outcome.run_dir}", flush=True)
        return outcome.stop.exit_code if outcome.stop else EXIT_INTERRUPTED
    if config.output_format == "hub" and hf_token and config.shard is not None:
        print(
            f"Shard {config.shard[0]}/{config.shard[1]}: local files only; `smoltrace-eval merge OUT_DIR SHARD_DIR...` "
            "publishes the run once every shard is done",
            flush=True,
        )
    elif config.output_format == "hub" and hf_token:
        return publish_run(outcome.run_dir, hf_token, config.private, hub_user)
    return EXIT_OK


def entry() -> None:
    """The console script: run, flush, and leave without the interpreter's slow teardown.

    Everything the run produced is written and fsynced by then; what remains at exit is library
    clean-up (litellm's and torch's atexit hooks, module finalisation) that took ~1.3 s here."""
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    entry()
