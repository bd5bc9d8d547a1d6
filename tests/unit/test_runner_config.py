"""smoltrace.config: flags -> EvalConfig, --model-args parsing, secrets redacted, validation."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from smoltrace.config import (
    ConfigError,
    EvalConfig,
    build_parser,
    config_from_args,
    normalise_group,
    parse_model_args,
    read_hf_token,
    redact_mapping,
)


def config(*argv: str) -> EvalConfig:
    return config_from_args(build_parser().parse_args(["--model", "openai/x", *argv]))


# -- --model-args -----------------------------------------------------------------------------
def test_model_args_are_typed() -> None:
    parsed = parse_model_args(
        [
            "temperature=0",
            "top_p=0.9",
            "max_new_tokens=256",
            'stop=["END", "\\n"]',
            "flag=true",
            "other=False",
            "name=hello world",
            "expr=a=b",
            "empty=",
        ]
    )
    assert parsed == {
        "temperature": 0,
        "top_p": 0.9,
        "max_new_tokens": 256,
        "stop": ["END", "\n"],
        "flag": True,
        "other": False,
        "name": "hello world",
        "expr": "a=b",
        "empty": "",
    }
    assert isinstance(parsed["temperature"], int) and isinstance(parsed["top_p"], float)
    assert parse_model_args(None) == {}
    assert parse_model_args(["x=null"]) == {"x": None}
    assert parse_model_args([" spaced =1"]) == {"spaced": 1}


@pytest.mark.parametrize("item", ["foo", "=1", "1abc=2", "a-b=3", "a b=4"])
def test_bad_model_args(item: str) -> None:
    with pytest.raises(ConfigError, match="--model-args"):
        parse_model_args([item])


def test_model_args_flag_feeds_the_config() -> None:
    cfg = config("--model-args", "temperature=0.5", "max_new_tokens=8")
    assert cfg.model_args == {"temperature": 0.5, "max_new_tokens": 8}
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        config("--model-args", "foo")


# -- secrets ----------------------------------------------------------------------------------
def test_secret_keys_are_redacted() -> None:
    values = {
        "api_key": "sk-1",
        "API_KEY": "sk-2",
        "hf_token": "hf_3",
        "token": "t",
        "client_secret": "s",
        "password": "p",
        "authorization": "Bearer x",
        "apikey": "k",
        "key": "k",
        "max_tokens": 5,
        "max_new_tokens": 6,
        "temperature": 0,
        "keyword": "kw",
        "monkey": "m",
    }
    redacted = redact_mapping(values)
    secret = {"api_key", "API_KEY", "hf_token", "token", "client_secret", "password", "authorization", "apikey", "key"}
    for key, value in redacted.items():
        assert (value == "[REDACTED]") is (key in secret), key


def test_public_dict_never_holds_secrets() -> None:
    cfg = config("--model-args", "api_key=sk-live-123", "temperature=0")
    public = cfg.public_dict()
    assert public["model_args"] == {"api_key": "[REDACTED]", "temperature": 0}
    assert "sk-live-123" not in repr(public)
    assert cfg.model_args["api_key"] == "sk-live-123"  # the real value is still used
    assert isinstance(public["enable_tools"], list) and isinstance(public["additional_imports"], list)


# -- grouping, run id -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("Customer Support", "customer-support"),
        ("  FinOps__Team!! ", "finops-team"),
        ("v1.2", "v1-2"),
        ("---", None),
        ("", None),
        (None, None),
    ],
)
def test_grouping_normalisation(raw: str | None, normal: str | None) -> None:
    assert normalise_group(raw) == normal


def test_grouping_flags_are_normalised() -> None:
    cfg = config("--use-case", "Customer Support", "--team", "ML Ops", "--suite-version", "V2 Beta", "--purpose", "regression")
    assert (cfg.use_case, cfg.team, cfg.suite_version, cfg.purpose) == ("customer-support", "ml-ops", "v2-beta", "regression")


def test_run_id_default_is_a_uuid() -> None:
    assert uuid.UUID(config().run_id)
    assert config().run_id != config().run_id


@pytest.mark.parametrize("run_id", ["run-1", "2025.01.01_a", "team/run:7@x+y", "a" * 128])
def test_good_run_ids(run_id: str) -> None:
    assert config("--run-id", run_id).run_id == run_id


@pytest.mark.parametrize("run_id", ["has space", "../escape", "_underscore-first", "a" * 129, "semi;colon", "new\nline"])
def test_bad_run_ids(run_id: str) -> None:
    with pytest.raises(ConfigError, match="--run-id"):
        config(f"--run-id={run_id}")
    with pytest.raises(ConfigError, match="--run-id"):
        config("--run-id=-dash-first")


# -- other validation -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--parallel-workers", "0"], "--parallel-workers"),
        (["--parallel-workers", "257"], "--parallel-workers"),
        (["--max-steps", "0"], "--max-steps"),
        (["--max-retries", "-1"], "--max-retries"),
        (["--max-retries", "21"], "--max-retries"),
        (["--task-timeout", "0"], "--task-timeout"),
        (["--limit", "0"], "--limit"),
        (["--enable-tools", "bogus"], "unknown tool"),
        (["--working-directory", "/does/not/exist"], "not a folder"),
        (["--hf-token-file", "/does/not/exist"], "no such file"),
        (["--gpu-exporter", "nohostport"], "HOST:PORT"),
        (["--gpu-exporter", "http://host:1"], "HOST:PORT"),
        (["--additional-imports", "os; import sys"], "not a module name"),
    ],
)
def test_bad_flags_are_config_errors(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config(*argv)


def test_model_is_required_unless_resuming() -> None:
    with pytest.raises(ConfigError, match="--model is required"):
        config_from_args(build_parser().parse_args([]))
    with pytest.raises(ConfigError, match="must not be empty"):
        config_from_args(build_parser().parse_args(["--model", "  "]))
    assert config_from_args(build_parser().parse_args(["--resume", "somewhere"])).resume == "somewhere"


def test_good_flags(tmp_path: Path) -> None:
    cfg = config(
        "--provider",
        "ollama",
        "--gpu-exporter",
        "[::1]:50051",
        "--enable-tools",
        "read_file",
        "read_file",
        "list_directory",
        "--working-directory",
        str(tmp_path),
        "--additional-imports",
        "numpy",
        "pandas.*",
        "--public",
        "--seed",
        "7",
    )
    assert cfg.provider == "ollama"
    assert cfg.gpu_exporter == "[::1]:50051"
    assert cfg.enable_tools == ("read_file", "list_directory")  # duplicates dropped, order kept
    assert cfg.additional_imports == ("numpy", "pandas.*")
    assert cfg.private is False
    assert cfg.seed == 7
    assert config().private is True
    assert config("--gpu-exporter", "localhost:50051").gpu_exporter == "localhost:50051"


def test_argparse_errors_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["--provider", "bogus"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith("smoltrace-eval: error: argument --provider: invalid choice")


def test_read_hf_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("  hf_secret_value\n", "utf-8")
    monkeypatch.setenv("HF_TOKEN", "hf_from_env")
    assert read_hf_token(config("--hf-token-file", str(token_file))) == "hf_secret_value"
    assert read_hf_token(config()) == "hf_from_env"
    monkeypatch.delenv("HF_TOKEN")
    assert read_hf_token(config()) is None
    token_file.write_text("\n", "utf-8")
    with pytest.raises(ConfigError, match="is empty"):
        read_hf_token(config("--hf-token-file", str(token_file)))
    assert "hf_secret_value" not in repr(config("--hf-token-file", str(token_file)).public_dict())
