"""Shared-secret bearer-token auth and TLS on the exporter's gRPC port."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2

from smoltrace_gpu_exporter.app import ExporterApp
from smoltrace_gpu_exporter.config import ConfigError
from smoltrace_proto import pb
from tests.integration.conftest import RPC_TIMEOUT_S, Client, sim_config, start_request

TOKEN = "s3cret-token-for-tests"


@pytest.fixture(scope="module")
def token_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("auth") / "token"
    path.write_text(TOKEN + "\n")  # a trailing newline is ignored
    return path


@pytest.fixture(scope="module")
def auth_app(token_file: Path) -> Iterator[ExporterApp]:
    app = ExporterApp(sim_config(auth_token_file=str(token_file)))
    app.start()
    yield app
    app.stop(deadline_s=2.0)


def _calls(client: Client, metadata: list[tuple[str, str]] | None) -> dict[str, Callable[[], object]]:
    stub = client.stub
    return {
        "StartSampling": lambda: stub.StartSampling(start_request("auth-run"), metadata=metadata, timeout=RPC_TIMEOUT_S),
        "Heartbeat": lambda: stub.Heartbeat(pb.HeartbeatRequest(run_id="auth-run"), metadata=metadata, timeout=RPC_TIMEOUT_S),
        "GetRun": lambda: stub.GetRun(pb.GetRunRequest(run_id="auth-run"), metadata=metadata, timeout=RPC_TIMEOUT_S),
        "ListRuns": lambda: stub.ListRuns(pb.ListRunsRequest(), metadata=metadata, timeout=RPC_TIMEOUT_S),
        "WatchRun": lambda: next(iter(stub.WatchRun(pb.WatchRunRequest(run_id="auth-run"), metadata=metadata, timeout=RPC_TIMEOUT_S))),
        "StopSampling": lambda: stub.StopSampling(pb.StopSamplingRequest(run_id="auth-run"), metadata=metadata, timeout=RPC_TIMEOUT_S),
    }


@pytest.mark.parametrize(
    "metadata",
    [
        pytest.param(None, id="no-metadata"),
        pytest.param([("authorization", "Bearer wrong")], id="wrong-token"),
        pytest.param([("authorization", TOKEN)], id="no-bearer-prefix"),
        pytest.param([("authorization", f"Bearer {TOKEN}x")], id="token-plus-one"),
        pytest.param([("authorization", f"bearer {TOKEN[:-1]}")], id="truncated"),
    ],
)
def test_calls_without_the_token_are_unauthenticated(
    auth_app: ExporterApp, client_factory: Callable[..., Client], metadata: list | None
) -> None:
    app = auth_app
    client = client_factory(app.addresses.grpc)
    started_before = app.registry.runs_started
    for name, call in _calls(client, metadata).items():
        with pytest.raises(grpc.RpcError) as err:
            call()
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED, name
        assert "bearer token" in err.value.details(), name
    assert app.registry.runs_started == started_before  # nothing got through
    # the health check stays open
    assert client.check() == health_pb2.HealthCheckResponse.SERVING


def test_calls_with_the_token_work(auth_app: ExporterApp, client_factory: Callable[..., Client]) -> None:
    client = client_factory(auth_app.addresses.grpc)
    metadata = [("authorization", f"Bearer {TOKEN}")]
    calls = _calls(client, metadata)
    started = calls["StartSampling"]()
    assert started.gpu_available
    for name in ("Heartbeat", "GetRun", "ListRuns", "WatchRun"):
        calls[name]()
    summary = calls["StopSampling"]()
    assert summary.run_id == "auth-run" and summary.energy_joules > 0


def test_unreadable_or_empty_token_file_is_a_config_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("  \n")
    for path, message in ((empty, "is empty"), (tmp_path / "missing", "cannot read")):
        app = ExporterApp(sim_config(auth_token_file=str(path)))
        with pytest.raises(ConfigError, match=message):
            app.start()
        app.stop(deadline_s=0.5)


# -- TLS --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed: cannot make a test certificate")
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    result = subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        pytest.skip(f"openssl could not make a self-signed certificate: {result.stderr.strip()[:200]}")
    return cert, key


def test_tls_secure_channel_works_and_plaintext_fails(
    make_app: Callable[..., ExporterApp], client_factory: Callable[..., Client], self_signed: tuple[Path, Path]
) -> None:
    cert, key = self_signed
    app = make_app(tls_cert=str(cert), tls_key=str(key))
    port = app.addresses.grpc.rsplit(":", 1)[1]
    credentials = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
    for target in (f"127.0.0.1:{port}", f"localhost:{port}"):  # the certificate names both
        secure = client_factory(target, credentials)
        assert secure.check() == health_pb2.HealthCheckResponse.SERVING
        run_id = f"tls-{target.split(':')[0]}"
        assert secure.stub.StartSampling(start_request(run_id), timeout=RPC_TIMEOUT_S).gpu_available
        assert secure.stub.StopSampling(pb.StopSamplingRequest(run_id=run_id), timeout=RPC_TIMEOUT_S).run_id == run_id

    plaintext = client_factory(app.addresses.grpc)
    with pytest.raises(grpc.RpcError) as err:
        plaintext.stub.ListRuns(pb.ListRunsRequest(), timeout=3)
    assert err.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)

    # TLS with a CA that did not sign the server's certificate fails too
    untrusted = client_factory(app.addresses.grpc, grpc.ssl_channel_credentials())
    with pytest.raises(grpc.RpcError) as err:
        untrusted.stub.ListRuns(pb.ListRunsRequest(), timeout=3)
    assert err.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def test_tls_with_auth(
    make_app: Callable[..., ExporterApp], client_factory: Callable[..., Client], self_signed: tuple[Path, Path], token_file: Path
) -> None:
    cert, key = self_signed
    app = make_app(tls_cert=str(cert), tls_key=str(key), auth_token_file=str(token_file))
    credentials = grpc.composite_channel_credentials(
        grpc.ssl_channel_credentials(root_certificates=cert.read_bytes()),
        grpc.access_token_call_credentials(TOKEN),  # sends "authorization: Bearer <token>"
    )
    client = client_factory(app.addresses.grpc, credentials)
    assert client.stub.ListRuns(pb.ListRunsRequest(), timeout=RPC_TIMEOUT_S).runs == []
    no_token = client_factory(app.addresses.grpc, grpc.ssl_channel_credentials(root_certificates=cert.read_bytes()))
    with pytest.raises(grpc.RpcError) as err:
        no_token.stub.ListRuns(pb.ListRunsRequest(), timeout=RPC_TIMEOUT_S)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_half_a_tls_configuration_is_a_config_error(self_signed: tuple[Path, Path]) -> None:
    cert, _ = self_signed
    app = ExporterApp(sim_config(tls_cert=str(cert)))
    with pytest.raises(ConfigError, match="go together"):
        app.start()
    app.stop(deadline_s=0.5)
