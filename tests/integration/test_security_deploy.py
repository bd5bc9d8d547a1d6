"""Container points of issue 13: the ollama service is hardened like the others, the runner's
collector under compose is advertised (so it takes only the run's token) and spills to disk, not
the /tmp tmpfs; the runner image makes nothing world-writable."""

from __future__ import annotations

import re

from smoltrace.config import build_parser, config_from_args
from tests.integration.test_deploy_compose import ENV_EXAMPLE, OLLAMA, RUNNER, command_args, compose, env_list, read_env_file
from tests.integration.test_deploy_images import RUNNER as RUNNER_DOCKERFILE
from tests.integration.test_deploy_images import instructions


def test_the_ollama_service_has_the_hardening_block() -> None:
    services = compose({**read_env_file(ENV_EXAMPLE), "SMOLTRACE_PROVIDER": "ollama"})["services"]
    ollama = services[OLLAMA]
    assert ollama["read_only"] is True
    assert ollama["cap_drop"] == ["ALL"]
    assert ollama["security_opt"] == ["no-new-privileges:true"]
    assert ollama["tmpfs"] == ["/tmp"]
    assert {v["target"] if isinstance(v, dict) else v.split(":")[1] for v in ollama["volumes"]} == {"/root/.ollama"}


def test_the_runners_collector_is_advertised_and_spills_to_disk() -> None:
    runner = compose()["services"][RUNNER]
    config = config_from_args(build_parser().parse_args(command_args(runner)))
    assert config.collector_address.startswith("0.0.0.0:") and config.collector_advertise == "runner:4317"
    spill = env_list(runner)["SMOLTRACE_COLLECTOR_SPILL_DIR"]
    assert spill and spill.startswith("/cache/"), spill
    assert not any(spill.startswith(t.split(":")[0]) for t in runner["tmpfs"]), (spill, runner["tmpfs"])


def test_the_runner_image_makes_nothing_world_writable() -> None:
    runs = " ".join(rest for kind, rest in instructions(RUNNER_DOCKERFILE) if kind == "RUN")
    modes = re.findall(r"(?:-m|chmod)\s+([0-7]{3,4}|[ugoa]*[+=][rwxXst]+)", runs)
    assert modes, "the image sets the modes of /cache and /results"
    for mode in modes:
        if mode.isdigit():
            assert int(mode, 8) & 0o007 == 0, f"mode {mode} gives others access"
        else:
            assert not mode.startswith(("o", "a")) and not mode.startswith("+"), mode
    assert "-o 10001 -g 10001" in runs
