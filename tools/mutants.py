"""Mutation check: remove each guarantee para advertises, one at a time, and expect a test to fail.

    .venv/bin/python tools/mutants.py              # every mutant (about 20 minutes on 2 busy CPUs)
    .venv/bin/python tools/mutants.py M1 M7b       # only these
    .venv/bin/python tools/mutants.py --list       # what each mutant removes and which tests guard it
    .venv/bin/python tools/mutants.py --serial     # run pytest without -n 2

Each mutant is a list of exact edits (file, old snippet, new snippet) and the tests that must
catch it. The edit is applied in place, the tests run with `pytest -x -q -n 2`, and the file
is restored (also on Ctrl-C). A mutant is

- **killed** when pytest reports failing tests (exit status 1);
- **survived** when the tests pass with the guarantee removed: the suite does not guard it;
- an **error** when its snippet is not found exactly once (the code moved: update the mutant,
  never count it as survived), a named test does not exist, or pytest could not run the tests
  (collection or usage error).

First, all named tests run once on the unmutated code: a test that already fails proves nothing.
Exits 0 only when every selected mutant was killed. Not run in CI (it runs the guarding tests once
per mutant); run it after changing a guarantee or the tests that guard it.

A test is named as `tests/FILE.py`, `tests/FILE.py::NAME`, or a bare `NAME` that is looked up
in tests/*.py (so a test can move between modules without editing this file).
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"


@dataclass
class Mutant:
    id: str
    removes: str                          # the guarantee, in words
    edits: list[tuple[str, str, str]]     # (file relative to ROOT, exact old snippet, new snippet)
    tests: list[str]                      # the tests that must catch it


LIFO_LOCK = '''\
        class _Lifo(asyncio.Lock):  # MUTANT: wakes the newest waiter first
            def _wake_up_first(self) -> None:
                if self._waiters and not self._waiters[-1].done():
                    self._waiters[-1].set_result(True)
        return self.target_locks.setdefault(branch, _Lifo())'''

MUTANTS = [
    Mutant("M1", "the target moves by compare-and-swap (update-ref with the old value)",
           [("para_rpc/integrate.py",
             'await git.update_ref(root, f"refs/heads/{branch}", new, old, message)',
             'await git.update_ref(root, f"refs/heads/{branch}", new, None, message)')],
           ["test_target_moved_during_integration_gets_busy_and_lands_nothing"]),
    Mutant("M2", "an integration refuses a target checkout with overlapping uncommitted changes",
           [("para_rpc/integrate.py", "    if overlap:\n", "    if False:\n")],
           ["tests/test_integrate.py"]),
    Mutant("M3", "`cancel --discard` saves the uncommitted work under a backup ref first",
           [("para_rpc/service/sessions.py",
             'ref = await git.create_ref(repo.root, f"refs/para/backup/{s.name}/{d[\'stamp\']}-discarded", snap)',
             'ref = f"refs/para/backup/{s.name}/{d[\'stamp\']}-discarded"')],
           ["test_cancel_discard_keeps_a_backup_ref", "tests/test_crash.py"]),
    Mutant("M4", "`continue` refuses while conflict markers remain",
           [("para_rpc/integrate.py", "    if markers:\n", "    if False:\n")],
           ["tests/test_integrate_conflicts.py"]),
    Mutant("M5", "session names are validated where the service looks a session up (JSON-RPC)",
           [("para_rpc/service/core.py", "        if name is not None:\n            validate_session_name(name)\n",
             "        if name is not None:\n            pass\n")],
           ["tests/test_errors.py"]),
    Mutant("M5'", "session names are validated where the service looks a session up (MCP)",
           [("para_rpc/service/core.py", "        if name is not None:\n            validate_session_name(name)\n",
             "        if name is not None:\n            pass\n")],
           ["test_hostile_session_names_are_refused_and_touch_nothing"]),
    Mutant("M6a", "the JSON-RPC socket refuses peers with another uid",
           [("para_rpc/server/sidecar.py", "if creds is not None and creds[1] != os.getuid():", "if False:")],
           ["tests/test_guarantees.py::test_a_peer_with_another_uid_is_disconnected_without_an_answer[json-rpc]"]),
    Mutant("M6b", "the MCP socket refuses peers with another uid",
           [("para_rpc/server/sidecar.py", "lambda w: _peer_uid(w) in (None, os.getuid())", "lambda w: True")],
           ["tests/test_guarantees.py::test_a_peer_with_another_uid_is_disconnected_without_an_answer[mcp]"]),
    Mutant("M7a", "integrations into one target wait in a queue",
           [("para_rpc/service/core.py", "        return self.target_locks.setdefault(branch, asyncio.Lock())",
             "        return contextlib.nullcontext()  # MUTANT: no queue")],
           ["test_ten_concurrent_integrations_land_exactly_once_each",
            "test_queued_integrations_land_in_arrival_order"]),
    Mutant("M7b", "the integration queue is first come, first served",
           [("para_rpc/service/core.py", "        return self.target_locks.setdefault(branch, asyncio.Lock())",
             LIFO_LOCK)],
           ["test_queued_integrations_land_in_arrival_order"]),
    Mutant("M8", "the project file overrides the user file",
           [("para_rpc/config.py", "    for source, path, within in layers:\n",
             "    for source, path, within in reversed(layers):\n")],
           ["tests/test_config.py"]),
    Mutant("M9", "integration keeps the session tip under a `-integrated` backup ref",
           [("para_rpc/service/integration.py",
             'kept = await git.create_ref(repo.root, f"refs/para/backup/{s.name}/{stamp}-integrated", tip)',
             'kept = f"refs/para/backup/{s.name}/{stamp}-integrated"')],
           ["tests/test_integrate.py"]),
    Mutant("M10", "crash repair brings the target's checkout along when the target had moved",
           [("para_rpc/service/repair.py",
             'await integrate.sync_checkout_after_crash(repo.root, target, d["old"], d["new"])', "None")],
           ["tests/test_integrate_crash.py"]),
    Mutant("M11", "`abort` saves a conflict resolution in progress (`-aborted` backup)",
           [("para_rpc/service/integration.py",
             ('saved = {"ref": await git.create_ref(repo.root, f"refs/para/backup/{s.name}/{_utc_stamp()}-aborted",\n'
             '                                                         snap), "commit": snap}'),
             'saved = {"ref": f"refs/para/backup/{s.name}/{_utc_stamp()}-aborted", "commit": snap}')],
           ["tests/test_integrate_conflicts.py"]),
    Mutant("M12", "`finish` keeps the commits it squashes under a `-finish` backup ref",
           [("para_rpc/service/sessions.py",
             ("d[\"pre_squash_ref\"] = await git.create_ref(repo.root, f\"refs/para/backup/{s.name}/{d['stamp']}-finish\",\n"
             "                                                           head)"),
             "d[\"pre_squash_ref\"] = f\"refs/para/backup/{s.name}/{d['stamp']}-finish\"")],
           ["tests/test_cli_lifecycle.py"]),
    Mutant("M13", "start repair keeps a half-started worktree that already holds work",
           [("para_rpc/service/repair.py", ' or (not d.get("preparing") and await git.status(s.worktree))', "")],
           ["tests/test_crash.py"]),
    Mutant("M14", "edits made while an integration was in flight are saved (`-leftover` backup)",
           [("para_rpc/service/integration.py",
             'ref = await git.create_ref(repo.root, f"refs/para/backup/{s.name}/{stamp}-leftover", snap)',
             'ref = f"refs/para/backup/{s.name}/{stamp}-leftover"')],
           ["test_edits_made_while_the_integration_was_in_flight_are_kept"]),
    Mutant("M15", "edits made during a failed attempt are saved before the branch is restored (`-failed`)",
           [("para_rpc/service/integration.py",
             'await git.create_ref(repo.root, f"refs/para/backup/{s.name}/{_utc_stamp()}-failed", snap)', "None")],
           ["test_edits_made_during_a_failed_attempt_are_kept"]),
    Mutant("M16", "`clean` deletes only backups older than clean.backup_days",
           [("para_rpc/service/sessions.py", "                elif made < backup_cutoff:\n", "                else:\n")],
           ["test_clean_deletes_only_backups_older_than_backup_days"]),
    Mutant("M17", "a checkout that cannot be brought along undoes the target move",
           [("para_rpc/integrate.py",
             'await git.update_ref(root, f"refs/heads/{branch}", old, new, "para: undo integration")', "pass")],
           ["test_a_checkout_that_cannot_follow_undoes_the_target_move"]),
    Mutant("M18", "para/wait waits for a change instead of answering at once",
           [("para_rpc/service/dispatching.py", "            if changed or remaining <= 0:\n", "            if True:\n")],
           ["test_para_wait_blocks_until_another_connection_changes_the_session"]),
    Mutant("M19", "crash repair completes an interrupted `recover`",
           [("para_rpc/service/repair.py", "                await self._do_recover(repo, s)\n",
             "                pass\n")],
           ["test_an_interrupted_recover_is_completed_on_restart"]),
    Mutant("M20", "crash repair completes an interrupted `resume`",
           [("para_rpc/service/repair.py", "                await self._do_resume(repo, s)\n",
             "                pass\n")],
           ["test_an_interrupted_resume_is_completed_on_restart"]),
    Mutant("M21", "a repair that fails says so in a note on the session",
           [("para_rpc/service/repair.py", "                s.notes.append(note)\n", "                pass\n")],
           ["test_a_repair_that_cannot_succeed_leaves_a_note_and_the_operation_pending"]),
    Mutant("M22", "crash repair aborts a half-made merge/rebase of an interrupted integration",
           [("para_rpc/service/repair.py", "        await integrate.abort_in(wt, pre)\n", "        pass\n")],
           ["test_an_integration_killed_while_materializing_its_conflict_is_undone"]),
    Mutant("M23", "the demo stops the sidecar it started",
           [("para_rpc/demo.py", '        run(["sidecar", "stop"], show=False)\n', ""),
            ("para_rpc/demo.py",
             '        subprocess.run(para + ["sidecar", "stop"], cwd=repo, env=env, capture_output=True)\n', "")],
           ["test_demo_runs_to_the_end"]),
    # The trust boundary: commands from the repository's own files run only after `para trust`.
    Mutant("M24", "commands the project file sets (GATED_KEYS) are withheld until the user approves them",
           [("para_rpc/trust.py", "        ok = bool(cmds or sets) and approved(common_dir, digest)\n",
             "        ok = True\n")],
           ["test_a_project_command_is_refused_until_the_user_approves_it",
            "test_project_agent_default_and_worktrees_dir_wait_for_approval"]),
    Mutant("M25", "an agent of a session gets `forbidden` when it approves commands or changes what runs",
           [("para_rpc/trust.py", "    who = agents.agent_caller(PEER_PID.get())\n", "    who = None\n")],
           ["test_an_agent_cannot_approve_its_own_commands",
            "test_an_agent_cannot_approve_or_change_what_runs_whatever_its_environment"]),
    Mutant("M26", "approving from inside a session's worktree is `forbidden`, whoever asks",
           [("para_rpc/service/trusting.py", "                    if real == wt or real.startswith(wt + os.sep):\n",
             "                    if False:\n")],
           ["test_an_agent_cannot_approve_or_change_what_runs_whatever_its_environment"]),
    Mutant("M27", "a file para reads from a repository that is a FIFO or device is refused (never read or waited on)",
           [("para_rpc/runtime.py", "        if kind is not None or not stat.S_ISREG(st.st_mode):\n",
             "        if False:\n")],
           ["test_project_config_fifo_device_symlink_out_or_huge_is_a_config_error",
            "test_task_file_fifo_device_symlink_out_or_huge_is_refused"]),
    Mutant("M28", "a file para reads from a repository that is a symlink out of it is refused",
           [("para_rpc/runtime.py", "        if real != root and not real.startswith(root + os.sep):\n",
             "        if False:\n")],
           ["test_project_config_fifo_device_symlink_out_or_huge_is_a_config_error",
            "test_task_file_fifo_device_symlink_out_or_huge_is_refused"]),
    Mutant("M29", "para never writes a prompt, log or instruction file through a symlink (O_NOFOLLOW)",
           [("para_rpc/runtime.py", "        return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)\n",
             "        return os.open(path, flags | os.O_CLOEXEC, 0o600)\n")],
           ["test_dispatch_never_writes_through_a_planted_symlink"]),
    # Nothing lost.
    Mutant("M30", "a backup ref is created, never moved: a name already taken gets `-2` (git.create_ref)",
           [("para_rpc/git.py", '"update-ref", "-m", message, name, new, "", check=False)',
             '"update-ref", "-m", message, name, new, check=False)')],
           ["test_a_backup_never_overwrites_an_earlier_backup_of_the_same_name",
            "test_a_saved_nested_repository_never_overwrites_an_earlier_one"]),
    Mutant("M31", "the processes of an agent still writing are frozen (SIGSTOP) while its worktree is saved",
           [("para_rpc/agents.py", "                os.kill(p, signal.SIGSTOP)\n", "")],
           ["test_cancel_freezes_a_writing_agent_so_nothing_it_wrote_is_lost",
            "test_an_agent_integrating_itself_gets_its_answer_and_its_writer_loses_nothing"]),
    Mutant("M32", "a nested repository or submodule holding work is saved under backup refs before its worktree goes",
           [("para_rpc/service/core.py",
             ("                refs = await git.save_embedded(s.worktree, e, repo.common_dir, prefix,\n"
             "                                               f\"para: uncommitted work in {e.path} of session {s.name}\")\n"),
             "                refs = {}\n")],
           ["test_cancel_saves_a_nested_repository_and_leaves_it_out_of_the_wip_commit",
            "test_cancel_saves_a_submodule_commit_and_recover_keeps_it_reachable",
            "test_cancel_saves_a_repository_nested_inside_a_nested_repository"]),
    Mutant("M33", "a HEAD off the session branch (detached) is saved under a `-head` backup ref on cancel",
           [("para_rpc/service/core.py",
             'ref = await git.create_ref(repo.root, f"refs/para/backup/{s.name}/{stamp}-head", commit)',
             'ref = f"refs/para/backup/{s.name}/{stamp}-head"')],
           ["test_cancel_force_saves_a_detached_head_and_says_so", "test_kill_after_cancel_force_saved_the_head"]),
    Mutant("M34", "a repository cloned into an ignored directory (vendor/, build/) is found and saved too",
           [("para_rpc/git.py", '            if ".git" in subdirs or ".git" in files:\n', "            if False:\n")],
           ["test_cancel_saves_a_repository_cloned_into_an_ignored_directory"]),
]


# ---- running ---------------------------------------------------------------------------------

def locate(selector: str) -> str:
    """A pytest node id (or file) for a test named as in the module docstring."""
    if selector.startswith("tests/"):
        path = ROOT / selector.split("::", 1)[0]
        if not path.exists():
            raise LookupError(f"{selector}: no such file")
        if "::" in selector:
            name = selector.split("::", 1)[1].split("[", 1)[0]
            if not re.search(rf"^(async )?def {re.escape(name)}\(", path.read_text(), re.MULTILINE):
                raise LookupError(f"{selector}: no such test")
        return selector
    found = [p for p in sorted(TESTS.glob("test_*.py"))
             if re.search(rf"^(async )?def {re.escape(selector)}\(", p.read_text(), re.MULTILINE)]
    if len(found) != 1:
        raise LookupError(f"test {selector}: found in {len(found)} modules {[p.name for p in found]}")
    return f"{found[0].relative_to(ROOT)}::{selector}"


def pytest(node_ids: list[str], serial: bool, verbose: bool) -> tuple[int, str]:
    """Run the tests; (exit status, pytest's summary line)."""
    argv = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-o", "addopts=",
            *([] if serial else ["-n", "2"]), *node_ids]
    res = subprocess.run(argv, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    if verbose:
        print(res.stdout)
    lines = [ln for ln in res.stdout.splitlines() if ln.strip()]
    return res.returncode, lines[-1].strip("= ") if lines else ""


def write(path: Path, text: str) -> None:
    path.write_text(text)
    # A stale bytecode file could hide the edit (same size and second): drop it.
    Path(importlib.util.cache_from_source(str(path))).unlink(missing_ok=True)


def apply(m: Mutant) -> dict[Path, str]:
    """Check every snippet first (found exactly once), then edit; returns the originals."""
    texts: dict[Path, str] = {}
    for rel, old, _ in m.edits:
        path = ROOT / rel
        texts.setdefault(path, path.read_text())
    mutated = dict(texts)
    for rel, old, new in m.edits:
        path = ROOT / rel
        n = mutated[path].count(old)
        if n != 1:
            raise LookupError(f"{rel}: the snippet to mutate occurs {n} times (the code moved?):\n{old}")
        mutated[path] = mutated[path].replace(old, new)
    for path, text in mutated.items():
        write(path, text)
    return texts


def run_mutant(m: Mutant, serial: bool, verbose: bool) -> tuple[str, str]:
    try:
        nodes = [locate(t) for t in m.tests]
    except LookupError as e:
        return "error", str(e)
    try:
        originals = apply(m)
    except LookupError as e:
        return "error", str(e)
    try:
        rc, summary = pytest(nodes, serial, verbose)
    finally:
        for path, text in originals.items():
            write(path, text)
    # With -x under xdist a failure ends the run as "interrupted" (exit 2): judge by the summary.
    if rc in (1, 2) and re.search(r"\b\d+ failed\b", summary) and " error" not in summary:
        return "killed", summary
    if rc == 0:
        return "survived", "every named test passed with the guarantee removed"
    return "error", f"pytest exited {rc}, not with failing tests: {summary}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("ids", nargs="*", help="mutant ids (default: all)")
    ap.add_argument("--list", action="store_true", help="list the mutants and exit")
    ap.add_argument("--serial", action="store_true", help="run pytest serially instead of -n 2")
    ap.add_argument("--no-baseline", action="store_true", help="skip the run of the named tests on unmutated code")
    ap.add_argument("-v", "--verbose", action="store_true", help="show pytest's output")
    args = ap.parse_args()
    by_id = {m.id: m for m in MUTANTS}
    unknown = [i for i in args.ids if i not in by_id]
    if unknown:
        ap.error(f"unknown mutant(s) {unknown}; known: {', '.join(by_id)}")
    selected = [by_id[i] for i in args.ids] if args.ids else MUTANTS
    if args.list:
        for m in selected:
            print(f"{m.id:<5} {m.removes}\n      files: {', '.join(sorted({e[0] for e in m.edits}))}"
                  f"\n      tests: {', '.join(m.tests)}")
        return 0
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(130))  # unwind: restore the files

    if not args.no_baseline:
        nodes, missing = [], []
        for m in selected:
            for t in m.tests:
                try:
                    nodes.append(locate(t))
                except LookupError as e:
                    missing.append(str(e))
        nodes = list(dict.fromkeys(nodes))
        print(f"baseline: {len(nodes)} test selections on the unmutated code ...", flush=True)
        rc, summary = pytest(nodes, args.serial, args.verbose) if nodes else (0, "")
        if rc != 0:
            print(f"baseline failed (pytest exit {rc}: {summary}): fix the tests before judging mutants")
            return 2
        for line in missing:
            print(f"  (not found, reported below: {line})")

    rows = []
    for m in selected:
        t0 = time.monotonic()
        print(f"{m.id}: {m.removes} ...", flush=True)
        verdict, why = run_mutant(m, args.serial, args.verbose)
        rows.append((m, verdict, why, time.monotonic() - t0))
        print(f"{m.id}: {verdict} ({time.monotonic() - t0:.0f} s){' - ' + why if why else ''}", flush=True)

    print("\n| id | guarantee removed | tests | result |\n| --- | --- | --- | --- |")
    for m, verdict, why, secs in rows:
        shown = verdict if verdict == "killed" else f"**{verdict}**: {why.splitlines()[0]}"
        print(f"| {m.id} | {m.removes} | {', '.join(m.tests)} | {shown} ({secs:.0f} s) |")
    bad = [m.id for m, verdict, _, _ in rows if verdict != "killed"]
    print(f"\n{len(rows) - len(bad)}/{len(rows)} killed" + (f"; not killed: {', '.join(bad)}" if bad else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
