"""Agents: a fresh `ToolCallingAgent` or `CodeAgent` per task over the shared model.

A fresh agent per task costs microseconds and gives each task its own memory and its own tool
instances, bound to the task's `ToolCallLog` (the tools that really ran). `CodeAgent` runs code in
smolagents' local restricted executor, with only the authorised imports.

`--prompt-yml` keys (validated; unknown keys are an error): `max_steps`, `instructions`,
`system_prompt` (replaces the agent's system prompt template), `prompt_templates` (merged over
smolagents' own), `planning_interval`, `additional_authorized_imports` (CodeAgent), `name`,
`description`, `verbosity_level`.
"""

from __future__ import annotations

import copy
import functools
import importlib.resources
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .tools import ToolCallLog, default_tools

DEFAULT_MAX_STEPS = 6
DEFAULT_AUTHORIZED_IMPORTS = ("math", "statistics", "datetime", "re", "json", "itertools", "collections", "fractions", "decimal")
MAX_PROMPT_YML_BYTES = 1_000_000
_YML_KEYS = {
    "max_steps": int,
    "instructions": str,
    "system_prompt": str,
    "prompt_templates": dict,
    "planning_interval": int,
    "additional_authorized_imports": list,
    "name": str,
    "description": str,
    "verbosity_level": int,
}


class PromptConfigError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class PromptConfig:
    max_steps: int | None = None
    instructions: str | None = None
    system_prompt: str | None = None
    prompt_templates: dict[str, Any] = field(default_factory=dict)
    planning_interval: int | None = None
    additional_authorized_imports: tuple[str, ...] = ()
    name: str | None = None
    description: str | None = None
    verbosity_level: int | None = None


def load_prompt_config(path: str | Path) -> PromptConfig:
    """Read and validate a --prompt-yml file (safe YAML only, 1 MB max, typed keys)."""
    p = Path(path).expanduser()
    try:
        size = p.stat().st_size
        if size > MAX_PROMPT_YML_BYTES:
            raise PromptConfigError(f"--prompt-yml {path}: larger than 1 MB ({size} bytes)")
        text = p.read_text("utf-8")
    except FileNotFoundError as err:
        raise PromptConfigError(f"--prompt-yml {path}: no such file") from err
    except UnicodeDecodeError as err:
        raise PromptConfigError(f"--prompt-yml {path}: not UTF-8 text") from err
    except OSError as err:
        raise PromptConfigError(f"--prompt-yml {path}: {err.strerror}") from err
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise PromptConfigError(f"--prompt-yml {path}: not valid YAML ({str(err).splitlines()[0]})") from err
    if data is None:
        return PromptConfig()
    if not isinstance(data, dict):
        raise PromptConfigError(f"--prompt-yml {path}: must be a mapping of settings, got {type(data).__name__}")
    problems = []
    for key, value in data.items():
        expected = _YML_KEYS.get(key)
        if expected is None:
            problems.append(f"unknown key {key!r} (allowed: {', '.join(sorted(_YML_KEYS))})")
        elif not isinstance(value, expected) or (isinstance(value, bool) and expected is int):
            problems.append(f"{key} must be a {expected.__name__}, got {type(value).__name__}")
    imports = data.get("additional_authorized_imports") or []
    if isinstance(imports, list) and not all(isinstance(i, str) and i and i != "*" for i in imports):
        problems.append("additional_authorized_imports must be a list of module names ('*' is not allowed)")
    steps = data.get("max_steps")
    if isinstance(steps, int) and not 1 <= steps <= 100:
        problems.append("max_steps must be 1..100")
    templates = data.get("prompt_templates") or {}
    if isinstance(templates, dict) and not all(isinstance(k, str) for k in templates):
        problems.append("prompt_templates keys must be strings")
    if problems:
        raise PromptConfigError(f"--prompt-yml {path}: " + "; ".join(problems))
    return PromptConfig(
        max_steps=data.get("max_steps"),
        instructions=data.get("instructions"),
        system_prompt=data.get("system_prompt"),
        prompt_templates=dict(templates),
        planning_interval=data.get("planning_interval"),
        additional_authorized_imports=tuple(imports),
        name=data.get("name"),
        description=data.get("description"),
        verbosity_level=data.get("verbosity_level"),
    )


@functools.cache
def default_templates(agent_type: str) -> dict[str, Any]:
    """smolagents' own prompt templates, parsed once (agents would re-parse the YAML per instance)."""
    name = "toolcalling_agent.yaml" if agent_type == "tool" else "code_agent.yaml"
    return yaml.safe_load(importlib.resources.files("smolagents.prompts").joinpath(name).read_text())


def _templates(agent_type: str, config: PromptConfig) -> dict[str, Any]:
    base = default_templates(agent_type)
    if not config.prompt_templates and config.system_prompt is None:
        return base
    base = copy.deepcopy(base)
    for key, value in config.prompt_templates.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    if config.system_prompt is not None:
        base["system_prompt"] = config.system_prompt
    return base


@functools.lru_cache(maxsize=128)
def _compiled(template: str) -> Any:
    from jinja2 import StrictUndefined, Template

    return Template(template, undefined=StrictUndefined)


def _cached_populate_template(template: str, variables: dict[str, Any]) -> str:
    """smolagents.agents.populate_template with the Jinja compile cached (same output)."""
    try:
        return _compiled(template).render(**variables)
    except Exception as e:
        raise Exception(f"Error during jinja template rendering: {type(e).__name__}: {e}") from e


def install_template_cache() -> None:
    """Agents compile the same few Jinja templates on every step; compile each once instead."""
    import smolagents.agents

    if smolagents.agents.populate_template is not _cached_populate_template:
        smolagents.agents.populate_template = _cached_populate_template


@dataclass(frozen=True, slots=True)
class AgentSettings:
    max_steps: int = DEFAULT_MAX_STEPS
    additional_imports: tuple[str, ...] = ()
    prompt: PromptConfig = field(default_factory=PromptConfig)
    extra_tools: tuple[str, ...] = ()
    working_directory: Path | None = None

    @property
    def effective_max_steps(self) -> int:
        return self.prompt.max_steps or self.max_steps

    def authorized_imports(self) -> list[str]:
        return sorted({*DEFAULT_AUTHORIZED_IMPORTS, *self.additional_imports, *self.prompt.additional_authorized_imports})


def build_agent(agent_type: str, model: Any, settings: AgentSettings, log: ToolCallLog, extra_tools: Sequence[Any] = ()) -> Any:
    from smolagents import CodeAgent, ToolCallingAgent
    from smolagents.monitoring import LogLevel

    tools = [*default_tools(log), *extra_tools]
    kwargs: dict[str, Any] = {
        "tools": tools,
        "model": model,
        "max_steps": settings.effective_max_steps,
        "verbosity_level": LogLevel(settings.prompt.verbosity_level) if settings.prompt.verbosity_level is not None else LogLevel.OFF,
    }
    install_template_cache()
    kwargs["prompt_templates"] = _templates(agent_type, settings.prompt)
    for key in ("instructions", "planning_interval", "name", "description"):
        value = getattr(settings.prompt, key)
        if value is not None:
            kwargs[key] = value
    if agent_type == "tool":
        return ToolCallingAgent(**kwargs)
    return CodeAgent(executor_type="local", additional_authorized_imports=settings.authorized_imports(), **kwargs)
