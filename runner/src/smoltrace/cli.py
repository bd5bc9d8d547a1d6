"""`smoltrace-eval`: evaluate smolagents agents. Heavy libraries are imported only after the flags
are checked, so `--help` and flag errors answer at once."""

from __future__ import annotations

import time

PROCESS_T0 = time.perf_counter()

import logging  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
from collections.abc import Sequence  # noqa: E402

from .config import ConfigError, build_parser, config_from_args, read_hf_token  # noqa: E402

EXIT_OK, EXIT_INTERNAL, EXIT_INPUT, EXIT_UNREACHABLE, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


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
    print(f"smoltrace-eval: error: {message}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
        if config.resume:
            from pathlib import Path

            from .evaluate import resume_config

            run_dir = Path(config.resume)
            if not (run_dir / "metadata.json").is_file():
                raise ConfigError(f"--resume {run_dir}: not a smoltrace run folder (no metadata.json)")
            config = resume_config(run_dir, config)
        if config.output_format == "hub":
            raise ConfigError("--output-format hub is not available in this version yet; use --output-format json (the default)")
        hf_token = read_hf_token(config)
    except ConfigError as err:
        error(str(err))
        return EXIT_INPUT
    _quiet_libraries(config.debug)

    from rich.console import Console

    from .agents import PromptConfigError
    from .evaluate import Evaluation
    from .models import ModelSetupError
    from .tasks import DatasetError

    console = Console(stderr=False)
    evaluation = Evaluation(config, hf_token, console, PROCESS_T0)
    try:
        outcome = evaluation.run()
    except DatasetError as err:
        error(err.render())
        return EXIT_INPUT
    except PromptConfigError as err:
        error(str(err))
        return EXIT_INPUT
    except ModelSetupError as err:
        error(str(err))
        return EXIT_UNREACHABLE
    except KeyboardInterrupt:
        error("interrupted before the run started")
        return EXIT_INTERRUPTED
    except Exception as err:
        logging.getLogger(__name__).debug("internal error", exc_info=True)
        error(f"internal error: {type(err).__name__}: {err} (rerun with --debug for details)")
        return EXIT_INTERNAL
    total = len(outcome.rows)
    print(f"Results: {outcome.run_dir} ({outcome.passed}/{total} passed)", flush=True)
    if outcome.interrupted:
        print(f"Interrupted: continue with  smoltrace-eval --resume {outcome.run_dir}", flush=True)
        return EXIT_INTERRUPTED
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
