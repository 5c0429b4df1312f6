"""A second SSH host for the executor tests: the same sshd as ssh_util's, but inside a network
namespace of its own, reached over a veth pair at its own address, so a test can cut the
network (`partition`) the way a dead switch or a lost VPN does, and restore it (`heal`).
Existing connections are not reset by a partition: they hang, as in real life, until a
keepalive or a timeout gives up. Needs root (it is on CI and on these machines; a machine
without it fails the tests that use it with the reason)."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import wait_until
from ssh_util import SSHD, SshHost, _install, keygen


@dataclass
class NetnsHost(SshHost):
    netns: str = ""
    link: str = ""  # the host side of the veth pair

    def partition(self) -> None:
        _ip("link", "set", self.link, "down")

    def heal(self) -> None:
        _ip("link", "set", self.link, "up")
        wait_until(lambda: _accepts(self.host, self.port), 30, "the host to be reachable again")


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=30)
    if done.returncode != 0:
        pytest.fail(f"ip {' '.join(args)}: {done.stderr.strip()}", pytrace=False)


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1) as s:
            return s.recv(4).startswith(b"SSH-")
    except OSError:
        return False


@pytest.fixture
def netns_host() -> Iterator[NetnsHost]:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.fail("the network-namespace host needs root and iproute2 (`ip`)", pytrace=False)
    _install()
    n = os.getpid() % 250 + 1  # one subnet per pytest worker process (10.231.<n>.0/30)
    ns, link, peer = f"para-t{os.getpid()}", f"pth{os.getpid()}"[:15], f"ptn{os.getpid()}"[:15]
    near, far = f"10.231.{n}.1", f"10.231.{n}.2"
    subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)  # (a crashed run's)
    d = Path(tempfile.mkdtemp(prefix="para-nsd-"))
    os.chmod(d, 0o700)
    proc: subprocess.Popen[bytes] | None = None
    try:
        _ip("netns", "add", ns)
        _ip("link", "add", link, "type", "veth", "peer", "name", peer)
        _ip("link", "set", peer, "netns", ns)
        _ip("addr", "add", f"{near}/30", "dev", link)
        _ip("link", "set", link, "up")
        _ip("-n", ns, "addr", "add", f"{far}/30", "dev", peer)
        _ip("-n", ns, "link", "set", peer, "up")
        _ip("-n", ns, "link", "set", "lo", "up")
        host_key = keygen(d / "host_ed25519")
        key = keygen(d / "client_ed25519")
        (d / "authorized_keys").write_text((d / "client_ed25519.pub").read_text())
        log = d / "sshd.log"
        config = d / "sshd_config"
        config.write_text("\n".join([
            "Port 22", f"ListenAddress {far}", f"HostKey {host_key}", f"PidFile {d / 'sshd.pid'}",
            f"AuthorizedKeysFile {d / 'authorized_keys'}", "PasswordAuthentication no",
            "KbdInteractiveAuthentication no", "PubkeyAuthentication yes", "PermitRootLogin prohibit-password",
            "UsePAM no", "StrictModes no", "AllowAgentForwarding no", "AllowStreamLocalForwarding yes",
            "X11Forwarding no", "PrintMotd no", "LogLevel VERBOSE", "MaxSessions 10", ""]))
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        proc = subprocess.Popen(["ip", "netns", "exec", ns, SSHD, "-D", "-f", str(config), "-E", str(log)],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                start_new_session=True)
        wait_until(lambda: _accepts(far, 22) or proc.poll() is not None, 30, "sshd in the namespace to listen")
        if proc.poll() is not None:
            pytest.fail(f"sshd in {ns} did not start: {proc.stderr.read().decode() if proc.stderr else ''}"
                        f"{log.read_text() if log.exists() else ''}", pytrace=False)
        pub = (d / "host_ed25519.pub").read_text().split()
        known = d / "known_hosts"
        known.write_text(f"{far} {pub[0]} {pub[1]}\n")
        yield NetnsHost(host=far, port=22, user=pwd.getpwuid(os.getuid()).pw_name, key=key, known_hosts=known,
                        host_key=host_key, log=log, dir=d, netns=ns, link=link)
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        # (deleting the namespace deletes the veth pair with it)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
        subprocess.run(["ip", "link", "del", link], capture_output=True, check=False)
        shutil.rmtree(d, ignore_errors=True)
