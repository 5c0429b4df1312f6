"""`para executor list|check` against a real OpenSSH server (tests/ssh_util.py), through the
real CLI and sidecar: the host is reached with strict host keys only, a changed host key
refuses before anything runs there, the worker runs as one constant command whatever the
configured python's path holds, a host without para or with another version says so, and
executors from a project file wait for `para trust`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import commit_file, run_para
from para_rpc import PROTOCOL_VERSION, __version__
from para_rpc.errors import Code
from netns_util import NetnsHost, netns_host  # noqa: F401  (fixture)
from ssh_util import SshHost, keygen, ssh_host  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("sidecar")


def configure(**executors: dict[str, object]) -> None:
    Path(os.environ["PARA_CONFIG"]).write_text(json.dumps({"executors": executors}))


def para_json(repo: Path, *args: str) -> tuple[int, dict]:
    proc = run_para(*args, "--json", cwd=repo, check=False)
    return proc.returncode, json.loads(proc.stdout)


def accepted(host: SshHost) -> int:
    return host.log.read_text().count("Accepted publickey")


def test_check_reaches_para_on_the_host_and_list_shows_it(repo: Path, ssh_host: SshHost) -> None:
    configure(h1=ssh_host.entry(env_passthrough=["API_KEY"], max_running=4))
    rc, listed = para_json(repo, "executor", "list")
    assert rc == 0, listed
    assert [e["name"] for e in listed["executors"]] == ["local", "h1"]
    h1 = listed["executors"][1]
    assert (h1["kind"], h1["host"], h1["port"], h1["env_passthrough"], h1["max_running"]) == \
        ("ssh", "127.0.0.1", ssh_host.port, ["API_KEY"], 4)
    before = accepted(ssh_host)
    rc, checked = para_json(repo, "executor", "check", "h1")
    assert rc == 0, checked
    found = checked["checked"]
    assert (found["name"], found["para"], found["protocol"]) == ("h1", __version__, PROTOCOL_VERSION)
    assert found["git"].startswith("git version") and found["python"] == ".".join(map(str, sys.version_info[:3]))
    assert accepted(ssh_host) == before + 1  # it really logged in
    human = run_para("executor", "check", "h1", cwd=repo).stdout
    assert human.startswith("h1: ok (para ") and "git version" in human


def test_a_changed_host_key_refuses_and_nothing_runs_there(repo: Path, ssh_host: SshHost, tmp_path: Path) -> None:
    other = keygen(tmp_path / "other_host_key")
    pub = Path(f"{other}.pub").read_text().split()
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"[127.0.0.1]:{ssh_host.port} {pub[0]} {pub[1]}\n")
    configure(h1=ssh_host.entry(known_hosts=str(wrong)))
    before = accepted(ssh_host)
    rc, out = para_json(repo, "executor", "check", "h1")
    assert rc == Code.config_error.exit, out
    assert out["error"]["code"] == "config_error" and "host key" in out["error"]["message"], out
    assert accepted(ssh_host) == before  # never authenticated, so nothing ran there
    # No known_hosts file at all: refused too (never trust on first use).
    configure(h1=ssh_host.entry(known_hosts=str(tmp_path / "absent")))
    rc, out = para_json(repo, "executor", "check", "h1")
    assert rc == Code.config_error.exit and "known_hosts" in out["error"]["message"], out
    assert accepted(ssh_host) == before


def test_the_worker_command_is_quoted_whatever_the_python_path_holds(repo: Path, ssh_host: SshHost,
                                                                      tmp_path: Path) -> None:
    """The configured python is the one variable part of the remote command line, which the
    host's shell parses: a path with quotes, `$(...)`, `;` and spaces runs as that one program."""
    odd = tmp_path / "py $(touch pwned); 'q' \"d\""
    odd.mkdir()
    python = odd / "python"  # (a wrapper: a symlink to a venv's python would lose the venv)
    python.write_text(f"#!/bin/sh\nexec {sys.executable} \"$@\"\n")
    python.chmod(0o755)
    configure(h1=ssh_host.entry(python=str(python)))
    rc, out = para_json(repo, "executor", "check", "h1")
    assert rc == 0, out
    assert out["checked"]["para"] == __version__
    assert not list(Path.home().glob("pwned")) and not (tmp_path / "pwned").exists()


def test_a_host_without_para_or_with_another_version_says_so(repo: Path, ssh_host: SshHost, tmp_path: Path) -> None:
    configure(h1=ssh_host.entry(python="/nonexistent/python3"))
    rc, out = para_json(repo, "executor", "check", "h1")
    assert rc == Code.config_error.exit and "para installed" in out["error"]["message"], out
    # A worker of another para version (a stand-in that answers as one would).
    old = tmp_path / "old-python"
    old.write_text("#!/bin/sh\ncat > /dev/null\necho '{\"para\": \"0.0.1\", \"protocol\": 0, \"python\": \"3.11.2\", "
                   "\"git\": \"git version 2.39.5\"}'\n")
    old.chmod(0o755)
    configure(h1=ssh_host.entry(python=str(old)))
    rc, out = para_json(repo, "executor", "check", "h1")
    assert rc == Code.version_mismatch.exit, out
    assert "0.0.1" in out["error"]["message"] and __version__ in out["error"]["message"], out


def test_unknown_and_invalid_executors_are_clear_errors(repo: Path, ssh_host: SshHost) -> None:
    configure(h1=ssh_host.entry())
    rc, out = para_json(repo, "executor", "check", "nope")
    assert rc == Code.not_found.exit and "local, h1" in out["error"]["message"], out
    for bad, why in (({"kind": "nomad", "host": "x", "known_hosts": "/k"}, "kind"),
                     ({"kind": "ssh", "host": "-oProxyCommand=sh", "known_hosts": "/k"}, "host"),
                     ({"kind": "ssh", "host": "x"}, "known_hosts"),
                     ({"kind": "ssh", "host": "x", "known_hosts": "/k", "env_passthrough": ["A B"]}, "env_passthrough")):
        configure(h1=bad)
        rc, out = para_json(repo, "executor", "list")
        assert rc == Code.config_error.exit and why in out["error"]["message"], (bad, out)


def test_executors_from_a_project_file_wait_for_trust(repo: Path, ssh_host: SshHost) -> None:
    Path(os.environ["PARA_CONFIG"]).unlink(missing_ok=True)
    commit_file(repo, ".para/config.json", json.dumps({"executors": {"h1": ssh_host.entry()}}), "project executors")
    before = accepted(ssh_host)
    rc, out = para_json(repo, "executor", "check", "h1")
    assert rc == Code.untrusted.exit and "executors" in out["error"]["message"], out
    assert accepted(ssh_host) == before


def test_a_host_in_another_network_is_checked_and_a_partition_is_said(repo: Path, netns_host: NetnsHost) -> None:
    """The second host of the worker-loss tests: its own address in a network namespace; cut
    off, a check fails as config_error naming it, and works again once the network is back."""
    configure(far=netns_host.entry())
    rc, checked = para_json(repo, "executor", "check", "far")
    assert rc == 0 and checked["checked"]["para"] == __version__, checked
    netns_host.partition()
    rc, out = para_json(repo, "executor", "check", "far")
    assert rc == Code.config_error.exit and netns_host.host in out["error"]["message"], out
    netns_host.heal()
    rc, checked = para_json(repo, "executor", "check", "far")
    assert rc == 0, checked


def test_the_default_root_is_one_the_worker_takes(repo: Path, ssh_host: SshHost) -> None:
    """RT16-2: the entry's default root `.cache/para` (README's example too) went to the worker
    as it was, and the worker takes only an absolute root or one under `~`: every request of an
    entry without `root` was refused. A relative root is under the login's home."""
    entry = ssh_host.entry()
    del entry["root"]
    configure(h1=entry, h2=ssh_host.entry(root="work/para"))
    rc, listed = para_json(repo, "executor", "list")
    assert rc == 0, listed
    roots = {e["name"]: e.get("root") for e in listed["executors"]}
    assert roots["h1"] == "~/.cache/para" and roots["h2"] == "~/work/para", roots
    home = Path(tempfile.mkdtemp(prefix="ph-", dir="/tmp"))
    try:
        for root in (roots["h1"], roots["h2"]):
            got = subprocess.run([sys.executable, "-m", "para_rpc.worker"], capture_output=True, timeout=60,
                                 env={**os.environ, "HOME": str(home)},
                                 input=json.dumps({"op": "receive", "root": root, "repo": "demo", "refs": {}}).encode())
            assert json.loads(got.stdout) == {"refs": {}}, got.stdout
        assert (home / ".cache/para/repos/demo.git").is_dir() and (home / "work/para/repos/demo.git").is_dir()
    finally:
        shutil.rmtree(home)
