"""A real OpenSSH server for the SSH executor's tests and benchmark (no pytest here: bench/ uses
it too). Debian's `openssh-server`, installed when missing (as .ci/run does for tmux), started
as the current user with a temporary host key and client key, on a free loopback port or, with
`netns`, inside a network namespace at its own address (tests/netns_util.py)."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

SSHD = "/usr/sbin/sshd"


class SshdError(RuntimeError):
    """sshd cannot be installed or started here: the reason."""


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
        base: dict[str, object] = {"kind": "ssh", "host": self.host, "port": self.port, "user": self.user,
                                   "identity_file": str(self.key), "known_hosts": str(self.known_hosts),
                                   "root": str(self.dir / "worker"), "python": sys.executable}
        return {**base, **over}


def install() -> None:
    if os.path.exists(SSHD):
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise SshdError(f"{SSHD} is missing and cannot be installed here: install Debian's openssh-server")
    subprocess.run(["apt-get", "install", "-y", "-qq", "openssh-server"], capture_output=True, check=False)
    if not os.path.exists(SSHD):
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True, check=False)
        done = subprocess.run(["apt-get", "install", "-y", "-qq", "openssh-server"], capture_output=True, text=True)
        if not os.path.exists(SSHD):
            raise SshdError(f"could not install openssh-server: {done.stderr[-2000:]}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "para-test", "-f", str(path)], check=True)
    return path


def accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1) as s:
            return s.recv(4).startswith(b"SSH-")
    except OSError:
        return False


def start(d: Path, host: str = "127.0.0.1", port: int = 0, netns: str | None = None,
          timeout: float = 30.0) -> tuple[SshHost, subprocess.Popen[bytes]]:
    """sshd with its keys and config in `d` (0700), listening on host:port (a free port for 0);
    `netns`: run it in that network namespace. Returns the host and its process (stop())."""
    install()
    port = port or free_port()
    os.chmod(d, 0o700)
    host_key = keygen(d / "host_ed25519")
    key = keygen(d / "client_ed25519")
    (d / "authorized_keys").write_text((d / "client_ed25519.pub").read_text())
    log = d / "sshd.log"
    config = d / "sshd_config"
    config.write_text("\n".join([
        f"Port {port}", f"ListenAddress {host}", f"HostKey {host_key}", f"PidFile {d / 'sshd.pid'}",
        f"AuthorizedKeysFile {d / 'authorized_keys'}", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
        "PubkeyAuthentication yes", "PermitRootLogin prohibit-password", "UsePAM no", "StrictModes no",
        "AllowAgentForwarding no", "AllowStreamLocalForwarding yes", "X11Forwarding no", "PrintMotd no",
        "LogLevel VERBOSE", "MaxSessions 10", "Subsystem sftp internal-sftp", ""]))
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # its privilege separation directory
    prefix = ["ip", "netns", "exec", netns] if netns else []  # (`ip netns exec` execs sshd itself)
    proc = subprocess.Popen([*prefix, SSHD, "-D", "-f", str(config), "-E", str(log)], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + timeout
    while not accepts(host, port) and proc.poll() is None:
        if time.monotonic() > deadline:
            stop(proc)
            raise SshdError(f"sshd did not listen on {host}:{port} within {timeout:.0f} s")
        time.sleep(0.05)
    if proc.poll() is not None:
        raise SshdError(f"sshd did not start: {proc.stderr.read().decode() if proc.stderr else ''}"
                        f"{log.read_text() if log.exists() else ''}")
    pub = (d / "host_ed25519.pub").read_text().split()
    known = d / "known_hosts"
    known.write_text(f"{host if port == 22 else f'[{host}]:{port}'} {pub[0]} {pub[1]}\n")
    return SshHost(host=host, port=port, user=pwd.getpwuid(os.getuid()).pw_name, key=key, known_hosts=known,
                   host_key=host_key, log=log, dir=d), proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
