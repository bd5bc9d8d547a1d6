"""The file tools' root: required, and never the output folder, home or a credentials folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from smoltrace.config import ConfigError, EvalConfig, build_parser, config_from_args
from smoltrace.tool_root import ToolRootError, check_tool_root


def config(*argv: str) -> EvalConfig:
    return config_from_args(build_parser().parse_args(["--model", "openai/x", *argv]))


@pytest.mark.parametrize("tool", ["read_file", "write_file", "list_directory"])
def test_file_tools_without_a_root_are_refused(tool: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs --working-directory"):
        config("--enable-tools", tool, "--output-dir", str(tmp_path / "out"))


def test_python_interpreter_alone_needs_no_root(tmp_path: Path) -> None:
    assert config("--enable-tools", "python_interpreter", "--output-dir", str(tmp_path / "out")).enable_tools == ("python_interpreter",)


@pytest.mark.parametrize(
    ("work", "out"),
    [
        ("results", "results"),  # the same folder (the container's /results as cwd)
        ("results", "results/runs"),  # the output folder inside the root
        ("results/work", "results"),  # the root inside the output folder
    ],
)
def test_root_overlapping_the_output_folder_is_refused(tmp_path: Path, work: str, out: str) -> None:
    (tmp_path / work).mkdir(parents=True, exist_ok=True)
    with pytest.raises(ConfigError, match="overlaps the output folder"):
        config("--enable-tools", "read_file", "--working-directory", str(tmp_path / work), "--output-dir", str(tmp_path / out))


def test_relative_paths_are_compared_resolved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="overlaps the output folder"):
        config("--enable-tools", "read_file", "--working-directory", ".")  # default --output-dir ./smoltrace_results


@pytest.mark.parametrize("inside", ["", ".ssh", ".aws/x", ".config", ".cache/huggingface", ".cache"])
def test_home_and_credentials_folders_are_refused(tmp_path: Path, inside: str) -> None:
    home = tmp_path / "home"
    for folder in (".ssh", ".aws/x", ".config", ".cache/huggingface"):
        (home / folder).mkdir(parents=True, exist_ok=True)
    root = home / inside
    with pytest.raises(ToolRootError, match=r"home folder|credentials"):
        check_tool_root(["read_file"], str(root), str(tmp_path / "out"), environ={"HOME": str(home)})


def test_a_project_folder_under_home_is_fine(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "project").mkdir(parents=True)
    (home / ".ssh").mkdir()
    check_tool_root(["read_file", "write_file"], str(home / "project"), str(tmp_path / "out"), environ={"HOME": str(home)})


def test_the_token_file_may_not_be_under_the_root(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    token = work / "token"
    token.write_text("hf_x", "utf-8")
    with pytest.raises(ConfigError, match="credentials"):
        config(
            "--enable-tools",
            "read_file",
            "--working-directory",
            str(work),
            "--hf-token-file",
            str(token),
            "--output-dir",
            str(tmp_path / "o"),
        )
