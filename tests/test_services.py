"""deploy/local and `hoptrace services`: real starts, stops and health checks."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hoptrace import services
from hoptrace.cli import app
from hoptrace.pipeline.settings import Settings
from tests.conftest import SilentEndpoint, free_port

SCRIPTS = services.SCRIPTS


def _script(name: str, action: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SCRIPTS / name), action], env={**os.environ, **env}, capture_output=True, text=True, check=False)


@pytest.fixture
def squatter(silent_endpoint: SilentEndpoint) -> int:
    """A loopback port held by a TCP server that is neither Kafka nor Redis: it accepts connections and never answers."""
    return silent_endpoint.port


def test_status_reports_real_kafka_and_redis(settings: Settings) -> None:
    result = CliRunner().invoke(app, ["services", "status"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "Apache Kafka 4.1" in result.output
    assert "Redis 7" in result.output
    assert result.output.count("healthy") == 2


def test_status_fails_when_nothing_answers(squatter: int) -> None:
    result = CliRunner().invoke(
        app,
        ["services", "status"],
        env={"COLUMNS": "200", "HOPTRACE_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0", "HOPTRACE_KAFKA_BOOTSTRAP": f"127.0.0.1:{squatter}"},
    )
    assert result.exit_code == 1
    assert result.output.count("down") == 2


def test_starting_twice_is_a_no_op(settings: Settings) -> None:
    again = services.run("up", settings)
    assert again.count("already running") + again.count("already answers") == 3, again  # Redis, its TLS twin, Kafka


@pytest.mark.parametrize(
    ("script", "variable", "address", "service"),
    [
        ("redis.sh", "HOPTRACE_REDIS_URL", "redis://127.0.0.1:{port}/0", "Redis"),
        ("kafka.sh", "HOPTRACE_KAFKA_BOOTSTRAP", "127.0.0.1:{port}", "Kafka"),
    ],
)
def test_a_port_taken_by_something_else_is_a_clear_error(
    squatter: int, tmp_path: Path, script: str, variable: str, address: str, service: str
) -> None:
    result = _script(script, "start", **{variable: address.format(port=squatter), "HOPTRACE_STATE_DIR": str(tmp_path)})
    assert result.returncode == 1
    assert f"port {squatter} on 127.0.0.1 is taken by something that is not {service}" in result.stderr
    assert variable in result.stderr


def test_status_shows_the_redis_address_without_its_password(settings: Settings) -> None:
    """The password in HOPTRACE_REDIS_URL is masked (the status table is pasted into tickets and chats)."""
    found = services.redis_status(settings.model_copy(update={"redis_url": "redis://:s3cret@127.0.0.1:1/0"}))
    assert (found.address, found.healthy) == ("redis://:**@127.0.0.1:1/0", False)
    assert "s3cret" not in found.detail


@pytest.mark.parametrize(
    ("script", "variable", "value"),
    [
        ("kafka.sh", "HOPTRACE_KAFKA_BOOTSTRAP", "127.0.0.1:a[$(touch {canary})]"),
        ("redis.sh", "HOPTRACE_REDIS_URL", "redis://127.0.0.1:6379$(touch {canary})/0"),
        ("kafka.sh", "HOPTRACE_KAFKA_CONTROLLER_PORT", "a[$(touch {canary})]"),
    ],
)
def test_an_address_that_is_not_host_port_is_refused_and_never_run(tmp_path: Path, script: str, variable: str, value: str) -> None:
    """The scripts evaluated $((PORT + 1)) on text from the environment: a crafted address ran a command."""
    canary = tmp_path / "ran"
    result = _script(script, "start", **{variable: value.format(canary=canary), "HOPTRACE_STATE_DIR": str(tmp_path)})
    assert result.returncode == 1, result.stdout + result.stderr
    assert "not a host:port address" in result.stderr or "is not a port number" in result.stderr, result.stderr
    assert not canary.exists()


def test_down_stops_only_what_up_started(settings: Settings, tmp_path: Path) -> None:
    port = free_port()
    mine = Settings(redis_url=f"redis://127.0.0.1:{port}/0", state_dir=tmp_path)
    services.run("up", mine, ("redis",))
    started = services.redis_status(mine)
    assert started.healthy and started.pid is not None

    # The suite's own Redis answers at another address and was not started from tmp_path: left alone.
    services.run("down", mine, ("redis",))
    assert not services.redis_status(mine).healthy
    assert services.redis_status(settings).healthy
    assert "nothing to stop" in services.run("down", mine, ("redis",))


def test_a_downloaded_release_is_checked_against_its_published_sha512(tmp_path: Path) -> None:
    """kafka.sh's tarball fallback unpacks only what matches Apache's checksum file, in either of the two forms Apache publishes."""
    release = tmp_path / "kafka.tgz"
    release.write_bytes(b"the release")
    digest = hashlib.sha512(b"the release").hexdigest()
    gpg_form = "kafka_2.13-4.1.2.tgz: " + " ".join(digest[i : i + 8].upper() for i in range(0, 128, 8))
    forms = {
        "sha512sum": (f"{digest}  kafka_2.13-4.1.2.tgz\n", 0),
        "gpg --print-md": (gpg_form[:70] + "\n" + " " * 22 + gpg_form[70:] + "\n", 0),
        "another file's": (f"{hashlib.sha512(b'something else').hexdigest()}  kafka.tgz\n", 1),
        "not a checksum": ("<html>404</html>\n", 1),
    }
    for form, (text, status) in forms.items():
        sums = tmp_path / f"{form}.sha512"
        sums.write_text(text)
        done = subprocess.run(
            ["bash", "-c", f'source "{SCRIPTS / "lib.sh"}" && verify_sha512 "$0" "$1"', str(release), str(sums)], capture_output=True, check=False
        )
        assert done.returncode == status, form
