"""Every private key (station signing key, uplink TLS client key, ADB host key) passes
the same checks: mode 0600 or 0400, owned by the service user, no symbolic link to a
looser or foreign file; a refusal is one line with the path and a hint, and at start-up
the agent exits 78."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from wipeagent.certs import pki
from wipeagent.certs.signer import load_station_signer
from wipeagent.errors import ConfigError
from wipeagent.keyfile import open_private_key, read_private_key
from wipeagent.runner import EXIT_CONFIG
from wipeagent.transports.adb import AdbHostKey
from wipeagent.uplink.tls import client_context, ensure_dev_client_tls, ensure_dev_server_tls

OTHER_UID = 4242  # no such account here: a file "someone else" owns

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")


def key(tmp_path: Path, name: str = "k.key", mode: int = 0o600) -> Path:
    path = tmp_path / name
    path.write_bytes(b"-----BEGIN PRIVATE KEY-----\nnot really\n-----END PRIVATE KEY-----\n")
    path.chmod(mode)
    return path


def refusal(path: Path, what: str = "test key") -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        read_private_key(path, what)
    error = caught.value
    assert "\n" not in str(error) and "\n" not in error.hint  # one line each
    assert what in str(error)
    return error


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_owner_only_modes_are_accepted(tmp_path: Path, mode: int) -> None:
    path = key(tmp_path, mode=mode)
    assert read_private_key(path, "test key").startswith(b"-----BEGIN")


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o700, 0o6600, 0o200])
def test_other_modes_are_refused_with_the_path_and_chmod(tmp_path: Path, mode: int) -> None:
    path = key(tmp_path, mode=mode)
    error = refusal(path)
    assert f"{path} has mode {mode & 0o7777:04o}" in str(error)
    assert "must be 0600 or 0400" in str(error)
    assert error.hint == f"chmod 600 {path}"


@needs_root
def test_a_key_owned_by_someone_else_is_refused(tmp_path: Path) -> None:
    path = key(tmp_path)
    os.chown(path, OTHER_UID, OTHER_UID)
    error = refusal(path)
    assert f"{path} belongs to uid {OTHER_UID}" in str(error)
    assert "not to the service user" in str(error)
    assert error.hint.startswith("chown ") and error.hint.endswith(str(path))


def test_a_link_to_a_good_key_is_followed(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    target = key(tmp_path / "real")
    link = tmp_path / "link.key"
    link.symlink_to(os.path.relpath(target, tmp_path))
    chained = tmp_path / "chained.key"
    chained.symlink_to(link)
    assert read_private_key(chained, "test key") == target.read_bytes()
    with open_private_key(chained, "test key") as checked:
        assert checked.target == target.resolve()
        assert Path(checked.proc_path).read_bytes() == target.read_bytes()


def test_a_link_to_a_looser_file_is_refused_naming_the_target(tmp_path: Path) -> None:
    target = key(tmp_path, "real.key", mode=0o644)
    link = tmp_path / "link.key"
    link.symlink_to(target)
    error = refusal(link)
    assert f"{link} (a link to {target})" in str(error) and "mode 0644" in str(error)
    assert error.hint == f"chmod 600 {target}"  # fix the file, not the link


@needs_root
def test_a_link_to_someone_elses_file_is_refused(tmp_path: Path) -> None:
    target = key(tmp_path, "real.key")
    os.chown(target, OTHER_UID, OTHER_UID)
    link = tmp_path / "link.key"
    link.symlink_to(target)
    error = refusal(link)
    assert f"a link to {target}" in str(error) and f"uid {OTHER_UID}" in str(error)


@needs_root
def test_a_link_someone_else_owns_is_refused(tmp_path: Path) -> None:
    target = key(tmp_path, "real.key")
    link = tmp_path / "link.key"
    link.symlink_to(target)
    os.lchown(link, OTHER_UID, OTHER_UID)
    error = refusal(link)
    assert f"symbolic link {link}" in str(error) and "re-point" in str(error)
    assert "chown -h" in error.hint


@pytest.mark.parametrize("kind", ["missing", "dangling", "loop", "directory", "fifo"])
def test_what_is_not_a_key_file(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "k.key"
    expected = {"missing": "does not exist", "dangling": "does not exist",
                "loop": "too many symbolic links", "directory": "not a regular file",
                "fifo": "not a regular file"}[kind]
    if kind == "dangling":
        path.symlink_to(tmp_path / "gone.key")
    elif kind == "loop":
        path.symlink_to(tmp_path / "other.key")
        (tmp_path / "other.key").symlink_to(path)
    elif kind == "directory":
        path.mkdir(mode=0o700)
    elif kind == "fifo":
        os.mkfifo(path, 0o600)  # must not block the agent
    assert expected in str(refusal(path))


def test_an_oversized_file_is_not_a_key(tmp_path: Path) -> None:
    path = tmp_path / "big.key"
    path.write_bytes(b"x" * 70_000)
    path.chmod(0o600)
    assert "larger than" in str(refusal(path))


# -- the three keys ---------------------------------------------------------------------


def station(tmp_path: Path) -> tuple[Path, Path]:
    ca = pki.init_ca(tmp_path / "ca", organisation="Test Org")
    req = pki.new_station(tmp_path / "station", station_id="bench-07",
                          organisation="Test Org")
    chain = pki.sign_station(req.csr, ca_key_path=ca.key, ca_cert_path=ca.cert,
                             out_path=tmp_path / "station" / "station.pem")
    return req.key, chain


def load_station(tmp_path: Path) -> tuple[Path, Callable[[], object]]:
    key_path, chain = station(tmp_path)
    return key_path, lambda: load_station_signer(key_path, chain)


def load_uplink(tmp_path: Path) -> tuple[Path, Callable[[], object]]:
    pki.ensure_dev_pki(tmp_path / "dev-pki")
    client = ensure_dev_client_tls(tmp_path / "dev-pki", station_id="bench-07")
    server = ensure_dev_server_tls(tmp_path / "server")
    return client.key, lambda: client_context(ca=server.ca, cert=client.cert, key=client.key)


def load_adb(tmp_path: Path) -> tuple[Path, Callable[[], object]]:
    path = tmp_path / "adb" / "adbkey"
    AdbHostKey.load_or_create(path)
    return path, lambda: AdbHostKey.load_or_create(path)


KEYS = {"station key": load_station, "uplink TLS client key": load_uplink,
        "ADB host key": load_adb}


@pytest.mark.parametrize("what", list(KEYS))
def test_each_key_gets_the_same_checks(tmp_path: Path, what: str) -> None:
    path, load = KEYS[what](tmp_path)
    load()  # as made: 0600, ours
    path.chmod(0o400)
    load()
    path.chmod(0o644)
    with pytest.raises(ConfigError, match=f"{what} {path} has mode 0644") as caught:
        load()
    assert caught.value.hint == f"chmod 600 {path}"
    path.chmod(0o600)
    # A link to a looser copy of the key is refused; to the key itself, followed.
    loose = tmp_path / "loose-copy.key"
    loose.write_bytes(path.read_bytes())
    loose.chmod(0o640)
    moved = path.with_name(path.name + ".real")
    path.rename(moved)
    path.symlink_to(loose)
    with pytest.raises(ConfigError, match=f"{what} {path} \\(a link to {loose}\\)"):
        load()
    path.unlink()
    path.symlink_to(moved)
    load()
    if os.geteuid() == 0:
        os.chown(moved, OTHER_UID, OTHER_UID)
        with pytest.raises(ConfigError, match=f"belongs to uid {OTHER_UID}"):
            load()


STATION_CONFIG = """\
state_dir = "{state}"
[station]
id = "bench-07"
operator = "alice"
[policy]
erase = "auto"
[android]
endpoints = ["127.0.0.1:9"]
[usb]
enabled = false
[ios]
enabled = false
[control]
socket = "{state}/control.sock"
group = ""
[page]
listen = "127.0.0.1:0"
[certificates]
key = "{key}"
chain = "{chain}"
"""


def test_a_loose_key_stops_the_agent_at_start_with_exit_78(tmp_path: Path) -> None:
    key_path, chain = station(tmp_path)
    key_path.chmod(0o640)
    config = tmp_path / "agent.toml"
    config.write_text(STATION_CONFIG.format(state=tmp_path / "state", key=key_path,
                                            chain=chain))
    proc = subprocess.run(
        [sys.executable, "-m", "wipeagent.runner", "run", "--config", str(config),
         "--log-format", "console"], capture_output=True, text=True, timeout=120,
        env={k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}, check=False)
    assert proc.returncode == EXIT_CONFIG, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if "configuration refused" in line]
    assert len(lines) == 1, proc.stderr
    assert f"station key {key_path} has mode 0640" in lines[0]
    assert f"(hint: chmod 600 {key_path})" in lines[0]
    assert "Traceback" not in proc.stderr
