"""The orchestration guide: the one copy of it, behind para://guide, the server's
instructions, the `orchestrate` prompt and the tool descriptions."""

# A complete task file, shown in the guide; the same text as tasks/TASK_1_greeting.md of this
# repository, whose example plan runs in the tests (tests/test_mcp_compat.py keeps them equal).
EXAMPLE_TASK = """\
# Write the greeting

Create `examples/greeting.txt` holding a one-line greeting, for the later tasks of this plan
to read. This task owns only that file; leave every other file alone.

Done when `examples/greeting.txt` holds exactly one line and is committed.

```file:examples/greeting.txt
hello from para
```

```agent
status writing the greeting
```

When done: para integrate "Add the example greeting"
"""

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
    "preferences": """\
Follow the team's stated workflow. Before dispatching, read the project's instructions
(CLAUDE.md, AGENTS.md, CONTRIBUTING.md). If they say changes are reviewed before they land (pull
requests, "never merge yourself"), have the agents finish for review instead of integrating: end
each task with `When done: para finish "<summary>"`, or set it once for the repository with
para_config_set(key="agent.workflow", value="finish", scope="project") (agent.workflow:
integrate = the agent lands its work on the base branch, finish = it keeps its branch for
review, none = para adds no finishing line). If they let agents work without permission
prompts, pass skip_permissions=true to para_dispatch (the agent profile's flag, e.g. claude's
--dangerously-skip-permissions); otherwise leave it off and the agent asks before acting. When
the instructions say nothing, ask the user once and keep to the answer.""",
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
gives the evidence per session (agent state, its last report, commits ahead, diffstat),
para_plans the steps of each plan, the resource para://session/<name> everything about one
session. Keep working with the user while
agents run.""",
    "conflicts": """\
Conflicts pause only the session that collides: the markers are left in its own worktree, the
target branch does not move, other sessions keep landing. The session's own agent normally
resolves them there and runs `para continue` itself. If its agent has stopped, resolve the files
in that worktree (or have someone do it), then call para_continue; para_abort puts the session
back to its pre-integration commit. para_conflicts forecasts collisions before anything lands.""",
}
_TITLES = {"split": "Split the goal", "tasks": "Write task files", "preferences": "The team's workflow",
           "dispatch": "Dispatch",
           "follow": "Follow the work", "conflicts": "Conflicts"}
_EXAMPLE = ("## Example task file\n\nA complete task file (tasks/TASK_1_greeting.md, step 1 of the example plan in "
            "para's repository; the ```file and ```agent blocks drive para's scripted test agent, a real agent "
            "reads them as part of the task):\n\n" + "".join("    " + line if line.strip() else line
                                                          for line in EXAMPLE_TASK.splitlines(keepends=True)))
GUIDE = "# Orchestrating parallel agents with para\n\n" + GUIDE_INTRO + "\n\n" + "\n\n".join(
    f"## {i}. {_TITLES[k]}\n\n{v}" for i, (k, v) in enumerate(GUIDE_SECTIONS.items(), 1)) + "\n\n" + _EXAMPLE

# The `orchestrate` prompt's steps (the guide follows them in the prompt).
PROMPT_STEPS = """\
Orchestrate this goal with para's tools, following the guide below.
1. Read the project's instructions (CLAUDE.md, AGENTS.md) for the team's workflow: integrate, or
finish for review (agent.workflow), and whether agents may skip permission prompts
(skip_permissions); read the code enough to know its areas. Plan the steps: foundations first,
then the parts that can run in parallel, each owning its own files.
2. Write one file per task as tasks/TASK_<n>_<slug>.md (same n = parallel). Each states what to
achieve, the files it owns, how to verify it, and ends with `When done: para integrate "<summary>"`
(or `para finish "<summary>"` when the team reviews before landing).
3. Show the plan to the user, then call para_dispatch(file="tasks").
4. Follow with para_wait (pass last_event back as after_event) and para_status or para_plans; read
para://session/<name> when a session conflicts or its agent stops, and help it (resolve in its
worktree, then para_continue).
5. When everything has landed, summarize what landed (or which branches wait for review)."""


def describe(summary: str, *sections: str) -> str:
    return summary + "".join("\n\n" + GUIDE_SECTIONS[s] for s in sections)
