"""Rendering a page: the Jinja2 environment (autoescape on, strict undefined, templates and the
CSS/JS read as package files with importlib.resources) and the page-wide Content-Security-Policy.

The CSP lives here (`CSP`), in one place for the report, compare and leaderboard pages; the layout
(`templates/layout.html.j2`) puts it in a <meta http-equiv> tag. The page's only script is
`static/report.js`, inlined verbatim and allowed by its hash (`script-src 'sha256-...'`, no
'unsafe-inline'): a script a run's data managed to put in the page would not run."""

from __future__ import annotations

import base64
import hashlib
from functools import cache
from importlib import resources
from typing import Any

import jinja2
from markupsafe import Markup


def _package_file(*parts: str) -> str:
    return resources.files(__package__).joinpath(*parts).read_text("utf-8")


CSS = _package_file("static", "report.css")
JS = _package_file("static", "report.js")
if "</" in JS or "</" in CSS:  # inlined verbatim: a closing tag inside would end the element early
    raise RuntimeError("report.js/report.css must not contain '</'")


def script_hash(source: str) -> str:
    """The CSP source that allows exactly this inline script (and nothing a run's data could inject)."""
    return "'sha256-" + base64.b64encode(hashlib.sha256(source.encode("utf-8")).digest()).decode("ascii") + "'"


CSP = f"default-src 'none'; style-src 'unsafe-inline'; script-src {script_hash(JS)}; img-src data:; base-uri 'none'; form-action 'none'"


def _load(name: str) -> str:
    try:
        return _package_file("templates", name)
    except FileNotFoundError as err:
        raise jinja2.TemplateNotFound(name) from err


def _bytecode_cache() -> jinja2.BytecodeCache | None:
    """Compiled templates kept between runs (compiling them is ~0.2 s of every run's teardown), in
    Jinja's own per-user folder (0700, owner checked); none when that folder cannot be made."""
    try:
        return jinja2.FileSystemBytecodeCache()
    except (OSError, RuntimeError):
        return None


@cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FunctionLoader(_load),
        bytecode_cache=_bytecode_cache(),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.globals.update(csp=CSP, css=Markup(CSS), js=Markup(JS))
    return env


def render(template: str, **context: Any) -> str:
    """Render `template` to one self-contained HTML document."""
    text: str = environment().get_template(template).render(**context)
    # Lone surrogates from odd JSON would make the file unwritable: replace them.
    return text.encode("utf-8", "replace").decode("utf-8")
