"""The SSH executor tests' host: a real OpenSSH server (tests/sshd.py) started as the current
user on a free loopback port with a temporary host key and a temporary client key. One per
pytest worker (session scope); stopped by its pid. A machine where sshd cannot be installed
fails the tests with the reason."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import sshd
from sshd import SshHost, keygen  # noqa: F401  (for the tests)


@pytest.fixture(scope="session")
def ssh_host() -> Iterator[SshHost]:
    d = Path(tempfile.mkdtemp(prefix="para-sshd-"))
    try:
        host, proc = sshd.start(d)
    except sshd.SshdError as e:
        shutil.rmtree(d, ignore_errors=True)
        pytest.fail(str(e), pytrace=False)
    try:
        yield host
    finally:
        sshd.stop(proc)
        shutil.rmtree(d, ignore_errors=True)
