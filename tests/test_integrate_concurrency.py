"""Many sessions integrating at once through the one sidecar; forecasts; pushed events."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from conftest import PARA_ARGV, Sidecar, cli_env, git, rev, wait_until

pytest.register_assert_rewrite("integrate_util")
from integrate_util import launch as launch_with  # noqa: E402
from integrate_util import (Api, BASE_FILES, BlockingCheck, assert_checkout_clean_at, changed_files, cli_json, edit_line,  # noqa: E402
                            message, api, outcome, parents, porcelain, start, world)


SHARED_SIDECAR = True  # one sidecar for the module (conftest.py), as one user's serves all repos



def launch(*args: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([*PARA_ARGV, *args, "--json"], cwd=cwd, env=cli_env(), text=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finish_all(procs: dict[str, subprocess.Popen]) -> dict[str, tuple[int, dict]]:
    results = {}
    for name, p in procs.items():
        out, err = p.communicate(timeout=120)
        assert "Traceback" not in err, f"{name}: {err}"
        results[name] = (p.returncode, json.loads(out))
    return results


def test_ten_concurrent_integrations_land_exactly_once_each(api: Api) -> None:
    repo = api.repo
    base = rev(repo, "main")
    names = [f"s{i}" for i in range(10)]
    for n in names:
        start(api, n, {f"{n}.txt": f"work of {n}\n"})
    procs = {n: launch("integrate", f"{n} lands", "--session", n, cwd=repo) for n in names}
    results = finish_all(procs)
    assert {n: rc for n, (rc, _) in results.items()} == {n: 0 for n in names}, results

    chain = git("rev-list", "--reverse", f"{base}..main", cwd=repo).splitlines()
    assert len(chain) == 10
    landed = []
    prev = base
    for c in chain:
        assert parents(repo, c) == [prev]            # linear: each squash on top of the previous
        files = changed_files(repo, c)
        assert len(files) == 1                        # only its own file
        owner = files[0][:-len(".txt")]
        assert message(repo, c) == f"{owner} lands"
        landed.append(owner)
        prev = c
    assert sorted(landed) == names                    # every session exactly once
    sessions = api.sessions()
    for n in names:
        assert sessions[n]["status"] == "integrated"
        assert sessions[n]["integration"]["commit"] in chain
        assert (repo / f"{n}.txt").read_text() == f"work of {n}\n"
    assert_checkout_clean_at(repo, "main")
    assert git("worktree", "list", "--porcelain", cwd=repo).count("worktree ") == 1


def test_concurrent_integrations_with_pairwise_conflicts(api: Api) -> None:
    """a1/a2 edit the same line of app.py, b1/b2 the same line of lib/util.py, solo its own
    file. Launched at once: of each pair exactly one lands and the other pauses."""
    repo = api.repo
    base = rev(repo, "main")
    util = BASE_FILES["lib/util.py"]
    edits = {"a1": {"app.py": edit_line(BASE_FILES["app.py"], 3, "a1 was here")},
             "a2": {"app.py": edit_line(BASE_FILES["app.py"], 3, "a2 was here")},
             "b1": {"lib/util.py": edit_line(util, 2, "    return 'b1'")},
             "b2": {"lib/util.py": edit_line(util, 2, "    return 'b2'")},
             "solo": {"solo.txt": "solo\n"}}
    for n, files in edits.items():
        start(api, n, files)
    procs = {n: launch("integrate", f"{n} lands", "--session", n, cwd=repo) for n in edits}
    results = finish_all(procs)
    codes = {n: rc for n, (rc, _) in results.items()}

    assert codes["solo"] == 0, results["solo"]
    for pair in (("a1", "a2"), ("b1", "b2")):
        assert sorted(codes[n] for n in pair) == [0, 7], codes
    winners = [n for n, rc in codes.items() if rc == 0]
    losers = [n for n, rc in codes.items() if rc == 7]

    chain = git("rev-list", "--reverse", f"{base}..main", cwd=repo).splitlines()
    assert sorted(message(repo, c) for c in chain) == sorted(f"{n} lands" for n in winners)
    assert all(len(parents(repo, c)) == 1 for c in chain)
    sessions = api.sessions()
    for n in winners:
        assert sessions[n]["status"] == "integrated"
    for n in losers:
        err = results[n][1]["error"]
        assert err["code"] == "conflict" and err["data"]["files"] == list(edits[n])
        assert sessions[n]["status"] == "conflicted"
        text = (Path(sessions[n]["worktree"]) / list(edits[n])[0]).read_text()
        assert "<<<<<<<" in text and ">>>>>>>" in text and n in text
    assert (repo / "solo.txt").exists()
    assert_checkout_clean_at(repo, "main")


def test_conflicts_forecast_finds_collisions_in_uncommitted_work(api: Api) -> None:
    repo = api.repo
    app = BASE_FILES["app.py"]
    start(api, "alpha", uncommitted={"app.py": edit_line(app, 7, "alpha's idea"), "alpha.txt": "a\n"})
    start(api, "beta", uncommitted={"app.py": edit_line(app, 7, "beta's idea")})
    start(api, "gamma", uncommitted={"app.py": edit_line(app, 18, "gamma, far away"), "gamma.txt": "g\n"})
    start(api, "delta", {"lib/util.py": "def util():\n    return 'delta'\n"})
    (repo / "lib/util.py").write_text("def util():\n    return 'main'\n")
    git("commit", "-q", "-am", "main changes util", cwd=repo)
    before = world(repo, api)

    out = cli_json("conflicts", cwd=repo)
    assert out["clean"] is False
    pairs = {(p["a"], p["b"]): p for p in out["pairs"]}
    assert list(pairs) == [("alpha", "beta")]
    assert pairs[("alpha", "beta")]["files"] == ["app.py"]
    assert all(a <= 7 <= b for a, b in pairs[("alpha", "beta")]["hunks"]["app.py"])
    by_name = {s["session"]: s for s in out["sessions"]}
    assert sorted(by_name) == ["alpha", "beta", "delta", "gamma"]
    assert {n: s["includes_uncommitted"] for n, s in by_name.items()} == {
        "alpha": True, "beta": True, "gamma": True, "delta": False}
    assert {n: s["clean"] for n, s in by_name.items()} == {
        "alpha": True, "beta": True, "gamma": True, "delta": False}
    assert by_name["delta"]["files"] == ["lib/util.py"] and by_name["delta"]["target"] == "main"
    # The forecast committed nothing and touched no worktree.
    assert world(repo, api) == before


def test_subscribed_client_receives_conflicted_and_integrated_events(api: Api, sidecar: Sidecar) -> None:
    repo = api.repo
    start(api, "clean", {"clean.txt": "clean\n"})
    start(api, "clash", {"app.py": edit_line(BASE_FILES["app.py"], 3, "clash's line")})
    (repo / "app.py").write_text(edit_line(BASE_FILES["app.py"], 3, "main's line"))
    git("commit", "-q", "-am", "main edits line 3", cwd=repo)

    listener = sidecar.connect(timeout=60)  # a read blocks at most this long: never a hang
    try:
        assert listener.request("para/subscribe", {})["subscribed"] is True
        cli_json("integrate", "clean lands", "--session", "clean", cwd=repo)
        cli_json("integrate", "--session", "clash", cwd=repo, expect=7)
        seen: dict[tuple[str, str], dict] = {}
        for msg in listener.notifications():  # blocking reads of pushed messages; no requests
            if msg["method"] == "para/event":
                ev = msg["params"]
                seen[(ev["kind"], ev["session"])] = ev
            if ("integrated", "clean") in seen and ("conflicted", "clash") in seen:
                break
    finally:
        listener.close()
    integrated, conflicted = seen[("integrated", "clean")], seen[("conflicted", "clash")]
    assert integrated["repo"] == str(repo)
    assert integrated["data"]["target"] == "main" and integrated["data"]["commit"] == rev(repo, "main")
    assert conflicted["data"]["files"] == ["app.py"] and conflicted["data"]["hunks"]["app.py"]
    assert conflicted["id"] > integrated["id"]
    assert porcelain(repo) == []


# ---- integrations waiting in one queue land together --------------------------------------------

def queue_behind_a_check(api: Api, tmp_path: Path, names: list[str]) -> tuple[BlockingCheck, subprocess.Popen,
                                                                          dict[str, subprocess.Popen]]:
    """`gate` holds main's queue (its integration check blocks); then `names` integrate, one
    after the other, each waiting in the queue before the next is launched (so the order they
    came in is known)."""
    check = BlockingCheck(tmp_path)
    gate = launch_with("integrate", "gate lands", "--session", "gate", cwd=api.repo, env=check.env())
    check.wait_blocked(gate)
    procs = {}
    for n in names:
        procs[n] = launch("integrate", f"{n} lands", "--session", n, cwd=api.repo)
        wait_until(lambda: api.session(n)["status"] == "integrating" or procs[n].poll() is not None,
                   what=f"{n} to wait in the queue")
    return check, gate, procs


def test_integrations_waiting_in_the_queue_land_together_each_as_its_own_commit(api: Api, tmp_path: Path) -> None:
    """Twenty agents integrating at once are the normal case: whoever's turn it is lands every
    clean integration waiting behind it with one move of main (one reflog entry naming them
    all), each still its own commit, in the order they came. One that conflicts with what
    landed before it (here: the gate's) is left out and pauses by itself."""
    repo = api.repo
    start(api, "gate", {"app.py": edit_line(BASE_FILES["app.py"], 3, "the gate's line")})
    start(api, "w1", {"w1.txt": "w1\n"})
    start(api, "clash", {"app.py": edit_line(BASE_FILES["app.py"], 3, "clash's line")})
    start(api, "w2", {"w2.txt": "w2\n", "lib/util.py": "def util():\n    return 2\n"})
    start(api, "w3", {"w3.txt": "w3\n"})
    check, gate, procs = queue_behind_a_check(api, tmp_path, ["w1", "clash", "w2", "w3"])
    check.release(0)
    assert outcome(gate)[0] == 0
    results = {n: outcome(p) for n, p in procs.items()}
    assert {n: rc for n, (rc, _) in results.items()} == {"w1": 0, "clash": 7, "w2": 0, "w3": 0}, results

    moves = git("reflog", "show", "--format=%gs", "main", cwd=repo).splitlines()
    assert moves[:2] == ["para: integrate w1, w2, w3", "para: integrate gate"], moves
    sessions = api.sessions()
    landed = [sessions[n]["integration"] for n in ("gate", "w1", "w2", "w3")]
    for before, it in zip(landed, landed[1:]):  # a chain: each on the one before, as if one by one
        assert it["old"] == before["commit"] and parents(repo, it["commit"]) == [before["commit"]]
    assert landed[-1]["commit"] == rev(repo, "main")
    for n, files in (("w1", ["w1.txt"]), ("w2", ["lib/util.py", "w2.txt"]), ("w3", ["w3.txt"])):
        commit = sessions[n]["integration"]["commit"]
        assert message(repo, commit) == f"{n} lands" and changed_files(repo, commit) == files
        assert sessions[n]["status"] == "integrated"
    assert sessions["clash"]["status"] == "conflicted" and results["clash"][1]["error"]["data"]["files"] == ["app.py"]
    assert_checkout_clean_at(repo, "main")
    assert (repo / "w2.txt").read_text() == "w2\n" and (repo / "lib/util.py").read_text() == "def util():\n    return 2\n"


def test_a_group_that_cannot_land_together_lands_one_by_one_and_each_hears_its_own_answer(
        api: Api, tmp_path: Path) -> None:
    """One of the waiting integrations changes a file the user is editing in main's checkout:
    together they would be refused, so each goes alone instead; only that one is refused
    (naming the file), the others land, and the user's edit is untouched."""
    repo = api.repo
    start(api, "gate", {"gate.txt": "gate\n"})
    start(api, "w1", {"w1.txt": "w1\n"})
    start(api, "mine", {"lib/util.py": "def util():\n    return 'theirs'\n"})
    start(api, "w2", {"w2.txt": "w2\n"})
    check, gate, procs = queue_behind_a_check(api, tmp_path, ["w1", "mine", "w2"])
    (repo / "lib/util.py").write_text("def util():\n    return 'the user is editing this'\n")
    check.release(0)
    assert outcome(gate)[0] == 0
    results = {n: outcome(p) for n, p in procs.items()}
    assert {n: rc for n, (rc, _) in results.items()} == {"w1": 0, "mine": 11, "w2": 0}, results
    assert results["mine"][1]["error"]["data"]["files"] == ["lib/util.py"]
    assert (repo / "lib/util.py").read_text() == "def util():\n    return 'the user is editing this'\n"
    moves = git("reflog", "show", "--format=%gs", "main", cwd=repo).splitlines()
    assert moves[:3] == ["para: integrate w2", "para: integrate w1", "para: integrate gate"], moves
    sessions = api.sessions()
    assert [sessions[n]["status"] for n in ("w1", "mine", "w2")] == ["integrated", "active", "integrated"]
    assert (repo / "w1.txt").exists() and (repo / "w2.txt").exists()
