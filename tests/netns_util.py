"""A second SSH host for the executor tests: the same sshd as ssh_util's, but inside a network
namespace of its own, reached over a veth pair at its own address, so a test can cut the
network (`partition`) the way a dead switch or a lost VPN does, and restore it (`heal`).
Existing connections are not reset by a partition: they hang, as in real life, until a
keepalive or a timeout gives up. Needs root (it is on CI and on these machines; a machine
without it fails the tests that use it with the reason)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import sshd
from conftest import wait_until
from sshd import SshHost


@dataclass
class NetnsHost(SshHost):
    netns: str = ""
    link: str = ""  # the host side of the veth pair

    def partition(self) -> None:
        _ip("link", "set", self.link, "down")

    def heal(self) -> None:
        _ip("link", "set", self.link, "up")
        wait_until(lambda: sshd.accepts(self.host, self.port), 30, "the host to be reachable again")


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=30)
    if done.returncode != 0:
        pytest.fail(f"ip {' '.join(args)}: {done.stderr.strip()}", pytrace=False)


@pytest.fixture
def netns_host() -> Iterator[NetnsHost]:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.fail("the network-namespace host needs root and iproute2 (`ip`)", pytrace=False)
    n = os.getpid() % 250 + 1  # one subnet per pytest worker process (10.231.<n>.0/30)
    ns, link, peer = f"para-t{os.getpid()}", f"pth{os.getpid()}"[:15], f"ptn{os.getpid()}"[:15]
    near, far = f"10.231.{n}.1", f"10.231.{n}.2"
    subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)  # (a crashed run's)
    d = Path(tempfile.mkdtemp(prefix="para-nsd-"))
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
        try:
            host, proc = sshd.start(d, far, 22, netns=ns)
        except sshd.SshdError as e:
            pytest.fail(f"in network namespace {ns}: {e}", pytrace=False)
        yield NetnsHost(**vars(host), netns=ns, link=link)
    finally:
        if proc is not None:
            sshd.stop(proc)
        # (deleting the namespace deletes the veth pair with it)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
        subprocess.run(["ip", "link", "del", link], capture_output=True, check=False)
        shutil.rmtree(d, ignore_errors=True)
