"""The orchestration guide: the one copy of it, behind para://guide, the server's
instructions, the `orchestrate` prompt and the tool descriptions."""

GUIDE_INTRO = """\
Para runs every task as a session: its own branch (para/<name>), its own git worktree and its
own agent process. You orchestrate: split the goal, write the tasks, dispatch them, follow what
happens. The agents do the work and land it on the base branch themselves."""

GUIDE_SECTIONS: dict[str, str] = {
    "split": """\
Split by independent areas. One task per part of the code that can change without touching the
others (a module, a service, a page, the docs). Two tasks editing the same file will collide, so
give each task clear file or directory boundaries. Foundations come first and in sequence (an
interface, a schema, a shared helper); what only builds on them runs in parallel afterwards.""",
    "tasks": """\
Write tasks as files tasks/TASK_<n>_<slug>.md (tasks/TASK_1_schema.md, tasks/TASK_2_api.md,
tasks/TASK_2_ui.md). The number is the step: tasks with the same number run in parallel, step
n+1 starts once every task of step n has landed; the slug becomes the session name. A task says
WHAT to achieve and how to tell it is done (behaviour, tests), not HOW to write the code; it
names the files or areas it owns and those it must leave alone; it stays small. It ends with
the workflow line
    When done: para integrate "<one-line summary>"
(or para finish "<summary>" to keep the branch for review instead of landing it).""",
    "dispatch": """\
Dispatch with para_dispatch: file="tasks" runs the whole directory as a plan (steps in order,
the tasks of a step in parallel); files=[...] runs a chosen set as a plan; task="..." (inline)
or file="tasks/TASK_1_x.md" runs one task; tasks=[{...}, ...] runs several independent tasks at
once. Every agent reports progress with `para status` and lands its own work with
`para integrate`; you do not integrate for it.""",
    "follow": """\
Follow, don't poll. para_wait blocks until one of the named sessions changes state (dispatched,
queued, integrated, conflicted, agent exited, ...) or the timeout passes; give the last_event it
returns back as after_event on the next call and no change is missed in between. para_status
gives the evidence per session (agent state, its last report, commits ahead, diffstat), the
resource para://session/<name> everything about one session. Keep working with the user while
agents run.""",
    "conflicts": """\
Conflicts pause only the session that collides: the markers are left in its own worktree, the
target branch does not move, other sessions keep landing. The session's own agent normally
resolves them there and runs `para continue` itself. If its agent has stopped, resolve the files
in that worktree (or have someone do it), then call para_continue; para_abort puts the session
back to its pre-integration commit. para_conflicts forecasts collisions before anything lands.""",
}
_TITLES = {"split": "Split the goal", "tasks": "Write task files", "dispatch": "Dispatch",
           "follow": "Follow the work", "conflicts": "Conflicts"}
GUIDE = "# Orchestrating parallel agents with para\n\n" + GUIDE_INTRO + "\n\n" + "\n\n".join(
    f"## {i}. {_TITLES[k]}\n\n{v}" for i, (k, v) in enumerate(GUIDE_SECTIONS.items(), 1)) + "\n"


def describe(summary: str, *sections: str) -> str:
    return summary + "".join("\n\n" + GUIDE_SECTIONS[s] for s in sections)
