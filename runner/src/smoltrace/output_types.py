"""Keep torch out of runs that never load it.

smolagents turns every final answer and tool output that is not text or an image into an agent
type with `handle_agent_output_types`, which does `import torch` to ask whether the value is a
tensor. For an API model that import costs seconds and ~100 MB, for nothing: a value can only be
a `torch.Tensor` if torch is already imported. `guard_output_types()` puts a wrapper in front
that answers "not a tensor" without importing torch while torch is not loaded, and hands every
other case to smolagents unchanged (so with torch loaded, behaviour is exactly smolagents').
"""

from __future__ import annotations

import sys
from typing import Any

# the modules that bound the function by name at import time
_MODULES = ("smolagents.agent_types", "smolagents.agents", "smolagents.tools")


def guard_output_types() -> None:
    """Install the torch-free guard (idempotent)."""
    import smolagents.agent_types as agent_types

    original = agent_types.handle_agent_output_types
    if getattr(original, "__smoltrace_guard__", False):
        return
    mapped = agent_types._AGENT_TYPE_MAPPING
    pil_image = agent_types.PIL.Image.Image

    def handle_agent_output_types(output: Any, output_type: str | None = None) -> Any:
        if output_type in mapped or isinstance(output, str | pil_image) or "torch" in sys.modules:
            return original(output, output_type)
        return output  # not a tensor: torch is not even loaded

    handle_agent_output_types.__smoltrace_guard__ = True  # type: ignore[attr-defined]
    handle_agent_output_types.__wrapped__ = original  # type: ignore[attr-defined]
    for name in _MODULES:
        module = sys.modules.get(name)
        if module is None:
            __import__(name)
            module = sys.modules[name]
        if getattr(module, "handle_agent_output_types", None) is original:
            module.handle_agent_output_types = handle_agent_output_types  # type: ignore[attr-defined]
