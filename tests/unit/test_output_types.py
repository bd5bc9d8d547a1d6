"""The output-type guard: smolagents' behaviour, without importing torch while torch is not loaded."""

from __future__ import annotations

import subprocess
import sys

CHECK = """
import sys
from smoltrace.output_types import guard_output_types
guard_output_types()
import smolagents.agents, smolagents.tools, smolagents.agent_types as t
assert smolagents.agents.handle_agent_output_types is t.handle_agent_output_types
assert smolagents.tools.handle_agent_output_types is t.handle_agent_output_types
assert t.handle_agent_output_types(15678) == 15678
assert t.handle_agent_output_types({"a": 1}) == {"a": 1}
assert isinstance(t.handle_agent_output_types("text"), t.AgentText)
assert isinstance(t.handle_agent_output_types(3, "string"), t.AgentText)
assert "torch" not in sys.modules, "the guard imported torch"
print("ok")
"""


def test_guard_answers_without_importing_torch() -> None:
    proc = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_with_torch_loaded_tensors_go_to_smolagents() -> None:
    import torch
    from smolagents import agent_types

    from smoltrace.output_types import guard_output_types

    guard_output_types()
    guard_output_types()  # idempotent: one wrapper, not two
    handle = agent_types.handle_agent_output_types
    assert handle.__wrapped__.__module__ == "smolagents.agent_types"
    tensor = torch.zeros(4)
    # smolagents' answer (AgentAudio, or the tensor itself without the audio extra), not the guard's
    assert type(handle(tensor)) is type(handle.__wrapped__(tensor))
    assert handle(7) == 7
