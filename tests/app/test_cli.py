"""``python -m app serve`` / ``replay`` as a user runs them, and configuration errors."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import pytest

from app.config import ConfigError, load_config
from app.model.build import ModelArtifacts
from app.replay import ClientTls, replay
from app.serving.launch import REPO_ROOT, free_port
from tests.app.conftest import ServiceProcess, run


@pytest.mark.slow
def test_serve_replay_and_sigterm(model: ModelArtifacts, tmp_path: Path) -> None:
    server = ServiceProcess(tmp_path, {}, model).start()  # an empty file: every default
    try:
        report = run(replay(server.target, rate=2000, seconds=1.5, batch_size=50,
                            n_symbols=40))  # fmt: skip
        assert report.batches == 60 and report.ticks == 3000
        assert report.accepted == 3000 and report.rejected == 0 and report.signals > 0
        assert report.latencies_us.size == 60 and report.percentile_us(50) > 0
        text = report.render()
        assert "p50" in text and "p95" in text and "p99" in text and "ticks/s" in text
    finally:
        code = server.stop(30)
    out = server.output()
    assert code == 0, out
    assert f"listening on 127.0.0.1:{server.port}" in out
    assert "shutting down" in out and "stopped" in out


def test_replay_without_a_server_says_so() -> None:
    with pytest.raises(ConnectionError, match=r"no server at 127\.0\.0\.1:.*python -m app serve"):
        run(replay(f"127.0.0.1:{free_port()}", rate=10, seconds=1, connect_timeout_s=0.5))


def test_defaults_are_the_embedded_setup() -> None:
    config = load_config()
    assert (config.server.host, config.server.port) == ("127.0.0.1", 50051)
    assert config.kserve.url is None and config.model.variant == "fp32"
    assert config.features.n_symbols == 1000 and config.batcher.max_queue_delay_us == 500


def test_yaml_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "app.yaml"
    path.write_text("server:\n  port: 6000\nbatcher:\n  max_batch_size: 32\n")
    config = load_config(path, {"server.host": "0.0.0.0", "kserve.url": "triton.svc:8001"})
    assert (config.server.host, config.server.port) == ("0.0.0.0", 6000)
    assert config.batcher.max_batch_size == 32 and config.kserve.url == "triton.svc:8001"


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        ("server:\n  port: 70000\n", "server.port: Input should be less than or equal to 65535 (got 70000)"),
        ("batcher:\n  max_batch_size: 0\n", "batcher.max_batch_size: Input should be greater than or equal to 1 (got 0)"),
        ("model:\n  variant: int3\n", "model.variant: Input should be 'fp32', 'int8' or 'int4' (got 'int3')"),
        ("features:\n  ema_fast: 30\n", "ema_fast = 30, ema_slow = 26: ema_fast must be smaller"),
        ("server:\n  prot: 1\n", "server.prot: unknown key, did you mean port? (got 1); allowed: host, port"),
        ("batcher:\n  max_queue_rows: 8\n  max_batch_size: 16\n", "max_queue_rows = 8: must be >= max_batch_size"),
        ("kserve:\n  url: 'not a url'\n", "kserve.url: not host:port with a port 1 to 65535 (got 'not a url')"),
        ("ingest:\n  price_min: 10\n  price_max: 5\n", "price_min = 10, price_max = 5: price_min must be below price_max"),
        ("ingest:\n  size_max: .nan\n", "ingest.size_max: Input should be a finite number"),
        ("ingest:\n  max_future_skew_s: -1\n", "ingest.max_future_skew_s: Input should be greater than or equal to 0"),
        ("ingest:\n  price_max: 1.0e+200\n", "(got 1e+200); allowed: <= 1e+100"),
        ("spool:\n  segment_bytes: 10\n", "spool.segment_bytes: Input should be greater than or equal to 4096"),
        ("spool:\n  retain_s: .inf\n", "spool.retain_s: Input should be a finite number"),
        ("cache:\n  max_signal_age_s: 0\n", "cache.max_signal_age_s: Input should be greater than 0"),
        ("server:\n  tls: {cert_file: /no/such.pem, key_file: /no/such.key}\n", "server.tls.cert_file: Path does not point to a file"),
        ("publish:\n  local_max_files: 0\n", "publish.local_max_files: Input should be greater than or equal to 1"),
    ],
)  # fmt: skip
def test_config_errors_name_key_value_and_what_is_allowed(
    tmp_path: Path, yaml_text: str, expected: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert expected in str(err.value)
    assert str(path) in str(err.value)


def test_serve_cli_reports_config_errors(capsys: pytest.CaptureFixture) -> None:
    from app.__main__ import main

    assert main(["serve", "--port", "99999"]) == 2
    assert (
        "server.port: Input should be less than or equal to 65535 (got 99999)"
        in capsys.readouterr().err
    )


def test_a_spool_directory_in_use_is_one_line_and_exit_2(
    model: ModelArtifacts, tmp_path: Path
) -> None:
    config = tmp_path / "serve.yaml"
    config.write_text(
        f"spool: {{dir: '{tmp_path / 'spool'}'}}\ntelemetry: {{metrics_port: null}}\n"
    )
    first = ServiceProcess(tmp_path, {"spool": {"dir": str(tmp_path / "spool")},
                                      "telemetry": {"metrics_port": None}}, model).start()  # fmt: skip
    try:
        second = subprocess.run(
            [sys.executable, "-m", "app", "serve", "--config", str(config), "--port",
             str(free_port()), "--model-dir", str(model.root)],
            cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    finally:
        assert first.stop() == 0
    assert second.returncode == 2, second.stderr
    errors = [line for line in second.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "in use by another process" in errors[0]
    assert "Traceback" not in second.stderr


def test_the_default_spool_is_found_again_after_kill_9(
    model: ModelArtifacts, tmp_path: Path, state_dir: Path
) -> None:
    """Nothing configured: the spool lives at a fixed path under the state directory, so a
    restart of the same service (same port) replays it and knows its acknowledged batches."""
    from app.server import pb2, pb2_grpc

    server = ServiceProcess(tmp_path, {"telemetry": {"metrics_port": None}}, model).start()
    spool = state_dir / "signal-platform" / "spool" / f"port-{server.port}"
    batch = pb2.TickBatch(symbol=[1, 2], price=[10.0, 20.0], size=[1.0, 1.0],
                          ts_ns=[time.time_ns() - 10**9] * 2, producer="cli", batch_id=7)  # fmt: skip
    try:
        with grpc.insecure_channel(server.target) as channel:
            ack = pb2_grpc.SignalServiceStub(channel).IngestTicks(batch)
        assert ack.accepted == 2 and any(spool.glob("spool-*.log"))
        server.kill()
        server.start()
        with grpc.insecure_channel(server.target) as channel:
            again = pb2_grpc.SignalServiceStub(channel).IngestTicks(batch)
        assert again.SerializeToString() == ack.SerializeToString()  # recognised: the spool's
    finally:
        server.close()


def _certificates(root: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)

    def issue(name: str, key: Any, issuer: tuple[Any, Any] | None, **ext: Any) -> Any:
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        builder = (x509.CertificateBuilder().subject_name(subject)
                   .issuer_name(issuer[0].subject if issuer else subject)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - dt.timedelta(minutes=5))
                   .not_valid_after(now + dt.timedelta(days=1)))  # fmt: skip
        if ext.get("ca"):
            builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        if ext.get("ip"):
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ext["ip"]))]),
                False,
            )
        return builder.sign(issuer[1] if issuer else key, hashes.SHA256())

    files: dict[str, Path] = {}

    def save(name: str, cert: Any, key: Any) -> None:
        files[f"{name}.pem"] = root / f"{name}.pem"
        files[f"{name}.pem"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        files[f"{name}.key"] = root / f"{name}.key"
        files[f"{name}.key"].write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))  # fmt: skip

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = issue("test CA", ca_key, None, ca=True)
    save("ca", ca, ca_key)
    for name, ip in (("server", "127.0.0.1"), ("client", None)):
        key = ec.generate_private_key(ec.SECP256R1())
        save(name, issue(name, key, (ca, ca_key), ip=ip), key)
    return files


def test_tls_and_mutual_tls_outside_the_mesh(model: ModelArtifacts, tmp_path: Path) -> None:
    pem = _certificates(tmp_path)
    tls = {"cert_file": str(pem["server.pem"]), "key_file": str(pem["server.key"]),
           "client_ca_file": str(pem["ca.pem"])}  # fmt: skip
    server = ServiceProcess(tmp_path, {"server": {"tls": tls}, "telemetry": {"metrics_port": None},
                                       "spool": {"dir": str(tmp_path / "spool")}}, model)  # fmt: skip
    client = ClientTls(pem["ca.pem"], pem["client.pem"], pem["client.key"])
    try:
        server.start(credentials=client.credentials())
        health = [sys.executable, "-m", "app.healthcheck", "--target", server.target,
                  "--tls-ca", str(pem["ca.pem"]), "--tls-cert", str(pem["client.pem"]),
                  "--tls-key", str(pem["client.key"])]  # fmt: skip
        assert subprocess.run(health, cwd=REPO_ROOT).returncode == 0
        assert "(TLS)" in server.output()
        report = run(replay(server.target, rate=500, seconds=0.4, batch_size=50, n_symbols=10,
                            tls=client))  # fmt: skip
        assert report.accepted == report.ticks == 200
        plain = subprocess.run(health[:5], cwd=REPO_ROOT, capture_output=True, text=True)
        assert plain.returncode == 1  # plaintext is refused ...
        no_cert = subprocess.run(health[:7], cwd=REPO_ROOT, capture_output=True, text=True)
        assert no_cert.returncode == 1  # ... and so is TLS without a client certificate
        assert "unhealthy" in no_cert.stderr
    finally:
        assert server.stop() == 0
