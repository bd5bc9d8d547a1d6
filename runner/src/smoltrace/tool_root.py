"""The root of the file tools (`--enable-tools read_file|write_file|list_directory`).

A model can read and write anything under it, so it must be a folder of its own: given
explicitly (`--working-directory`, never the current folder by default), and neither inside nor
around the run's output folder (a model could read other runs' results or rewrite their
metadata) nor the home folder or a credentials folder (~/.ssh, ~/.aws, ~/.config, ...).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

FILE_TOOLS = ("read_file", "write_file", "list_directory")
# relative to the home folder; any of them inside the root (or the root inside one) is refused
CREDENTIAL_FOLDERS = (
    ".ssh",
    ".aws",
    ".azure",
    ".config",
    ".gnupg",
    ".docker",
    ".kube",
    ".cache/huggingface",
    ".huggingface",
    ".netrc",
    ".git-credentials",
    ".pypirc",
)


class ToolRootError(ValueError):
    """The file tools' root is missing or unsafe (a flag error, exit 2)."""


def _overlaps(a: Path, b: Path) -> bool:
    return a == b or a in b.parents or b in a.parents


def _contains(outer: Path, inner: Path) -> bool:
    return outer == inner or outer in inner.parents


def protected_folders(environ: Mapping[str, str] | None = None) -> list[Path]:
    """Credentials folders of this user (and the Hugging Face cache/token wherever $HF_HOME puts it)."""
    env = os.environ if environ is None else environ
    home = Path(env.get("HOME") or Path.home()).expanduser().resolve()
    folders = [home / name for name in CREDENTIAL_FOLDERS]
    for var in ("HF_HOME", "HF_TOKEN_PATH", "AWS_SHARED_CREDENTIALS_FILE", "GOOGLE_APPLICATION_CREDENTIALS", "KUBECONFIG"):
        if env.get(var):
            folders.append(Path(env[var]).expanduser().resolve())
    return folders


def check_tool_root(
    tools: Iterable[str],
    working_directory: str | None,
    output_dir: str,
    extra_protected: Iterable[str | None] = (),
    environ: Mapping[str, str] | None = None,
) -> None:
    """Raise ToolRootError unless the file tools (if any) have a root of their own."""
    wanted = [t for t in tools if t in FILE_TOOLS]
    if not wanted:
        return
    flag = f"--enable-tools {' '.join(wanted)}"
    if not working_directory:
        raise ToolRootError(f"{flag} needs --working-directory: a folder of its own for the model's file access")
    root = Path(working_directory).expanduser().resolve()
    if not root.is_dir():
        raise ToolRootError(f"--working-directory {working_directory}: not a folder")
    out = Path(output_dir).expanduser().resolve()
    if _overlaps(root, out):
        raise ToolRootError(
            f"--working-directory {working_directory} overlaps the output folder {output_dir}: the model could read or rewrite run folders"
        )
    env = os.environ if environ is None else environ
    home = Path(env.get("HOME") or Path.home()).expanduser().resolve()
    if _contains(root, home):
        raise ToolRootError(f"--working-directory {working_directory} contains the home folder {home}")
    for folder in [*protected_folders(env), *(Path(p).expanduser().resolve() for p in extra_protected if p)]:
        if _overlaps(root, folder):
            raise ToolRootError(f"--working-directory {working_directory} overlaps {folder}, which holds credentials")
