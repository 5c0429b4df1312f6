"""A real OpenSSH server for the SSH executor tests: Debian's `openssh-server` (installed here
when missing, as .ci/run does for tmux; a machine where it cannot be installed fails the tests
with the reason), started as the current user on a free loopback port with a temporary host key
and a temporary client key. One per pytest worker (session scope); stopped by its pid."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import wait_until

SSHD = "/usr/sbin/sshd"


@dataclass
class SshHost:
    host: str
    port: int
    user: str
    key: Path          # the client's private key
    known_hosts: Path  # the host's real key, as `ssh-keyscan` would give it
    host_key: Path     # the host's private key (to make a wrong known_hosts from another one)
    log: Path
    dir: Path

    def entry(self, **over: object) -> dict[str, object]:
        """An `executors.<name>` config entry for this host."""
        import sys
        base: dict[str, object] = {"kind": "ssh", "host": self.host, "port": self.port, "user": self.user,
                                   "identity_file": str(self.key), "known_hosts": str(self.known_hosts),
                                   "root": str(self.dir / "worker"), "python": sys.executable}
        return {**base, **over}


def _install() -> None:
    if os.path.exists(SSHD):
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.fail(f"{SSHD} is missing and cannot be installed here: install Debian's openssh-server")
    subprocess.run(["apt-get", "install", "-y", "-qq", "openssh-server"], capture_output=True, check=False)
    if not os.path.exists(SSHD):
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True, check=False)
        done = subprocess.run(["apt-get", "install", "-y", "-qq", "openssh-server"], capture_output=True, text=True)
        if not os.path.exists(SSHD):
            pytest.fail(f"could not install openssh-server: {done.stderr[-2000:]}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "para-test", "-f", str(path)], check=True)
    return path


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            return s.recv(4).startswith(b"SSH-")
    except OSError:
        return False


@pytest.fixture(scope="session")
def ssh_host() -> Iterator[SshHost]:
    _install()
    d = Path(tempfile.mkdtemp(prefix="para-sshd-"))
    os.chmod(d, 0o700)
    host_key = keygen(d / "host_ed25519")
    key = keygen(d / "client_ed25519")
    (d / "authorized_keys").write_text((d / "client_ed25519.pub").read_text())
    port = _free_port()
    log = d / "sshd.log"
    config = d / "sshd_config"
    config.write_text("\n".join([
        f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {host_key}", f"PidFile {d / 'sshd.pid'}",
        f"AuthorizedKeysFile {d / 'authorized_keys'}", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
        "PubkeyAuthentication yes", "PermitRootLogin prohibit-password", "UsePAM no", "StrictModes no",
        "AllowAgentForwarding no", "AllowStreamLocalForwarding yes", "X11Forwarding no", "PrintMotd no",
        "LogLevel VERBOSE", "MaxSessions 10", "Subsystem sftp internal-sftp", ""]))
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # its privilege separation directory
    proc = subprocess.Popen([SSHD, "-D", "-f", str(config), "-E", str(log)], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        wait_until(lambda: _accepts(port) or proc.poll() is not None, 30, "sshd to listen")
        if proc.poll() is not None:
            pytest.fail(f"sshd did not start: {proc.stderr.read().decode() if proc.stderr else ''}"
                        f"{log.read_text() if log.exists() else ''}")
        pub = (d / "host_ed25519.pub").read_text().split()
        known = d / "known_hosts"
        known.write_text(f"[127.0.0.1]:{port} {pub[0]} {pub[1]}\n")
        import pwd
        yield SshHost(host="127.0.0.1", port=port, user=pwd.getpwuid(os.getuid()).pw_name, key=key,
                      known_hosts=known, host_key=host_key, log=log, dir=d)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(d, ignore_errors=True)
