"""The one validator for session names, the one for branch names, and friendly names.

Session names become a directory under `.para/worktrees/` and a branch
component, so they are kept to a portable ASCII alphabet. Branch names follow
`git check-ref-format --branch` (checked here in Python so that a bad name is
refused before any git process or file is touched).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING

from para_rpc.errors import Code, ParaError

if TYPE_CHECKING:
    import random

MAX_SESSION_NAME = 64
# Names whose branch `<prefix>/<name>` would collide with para's own namespaces:
# `<prefix>/archived/<stamp>/<name>` holds cancelled sessions, and git cannot have
# both a branch `<prefix>/archived` and branches below it.
RESERVED_SESSION_NAMES = frozenset({"archived"})
MAX_BRANCH_NAME = 200

_SESSION_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9]|[-_](?=[A-Za-z0-9]))*")
_BRANCH_FORBIDDEN = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]")


def validate_session_name(name: object) -> str:
    """Return `name` if it is a valid session name, else raise invalid_input."""
    if not isinstance(name, str) or not name:
        raise ParaError(Code.invalid_input, "session name is empty")
    shown = name if len(name) <= 40 else name[:40] + "…"
    if len(name) > MAX_SESSION_NAME:
        raise ParaError(Code.invalid_input,
                        f"session name is {len(name)} characters long; the limit is {MAX_SESSION_NAME}")
    if not _SESSION_RE.fullmatch(name):
        raise ParaError(Code.invalid_input,
                        f"invalid session name {shown!r}: use ASCII letters, digits, '-' and '_', "
                        "starting and ending with a letter or digit, no doubled '-' or '_'")
    if name.lower() in RESERVED_SESSION_NAMES:  # (case-insensitive file systems too)
        raise ParaError(Code.invalid_input,
                        f"session name {name!r} is reserved (cancelled sessions are archived under "
                        f"<prefix>/{name}/); choose another name")
    return name


def validate_branch_name(name: object, what: str = "branch name") -> str:
    """Return `name` if git would accept it as a branch name (check-ref-format --branch)."""
    if not isinstance(name, str) or not name:
        raise ParaError(Code.invalid_input, f"{what} is empty")
    shown = name if len(name) <= 40 else name[:40] + "…"
    problem = None
    if len(name) > MAX_BRANCH_NAME:
        problem = f"longer than {MAX_BRANCH_NAME} characters"
    elif not name.isascii():
        problem = "contains non-ASCII characters"
    elif _BRANCH_FORBIDDEN.search(name):
        problem = "contains a space, control character or one of ~ ^ : ? * [ \\"
    elif name.startswith("-"):
        problem = "starts with '-'"
    elif name == "@" or "@{" in name:
        problem = "is '@' or contains '@{'"
    elif ".." in name or "//" in name:
        problem = "contains '..' or '//'"
    elif name.startswith("/") or name.endswith(("/", ".")):
        problem = "starts or ends with '/' or ends with '.'"
    elif name == "HEAD" or name.startswith("refs/"):
        problem = "is HEAD or a full ref name (give the short branch name)"
    else:
        for part in name.split("/"):
            if part.startswith(".") or part.endswith(".lock"):
                problem = "has a component starting with '.' or ending with '.lock'"
                break
    if problem:
        raise ParaError(Code.invalid_input, f"invalid {what} {shown!r}: {problem}")
    return name


ADJECTIVES = (
    "agile amber bold brave breezy bright brisk calm candid cheerful clever cosmic crisp "
    "curious daring deft eager earnest fancy fearless fleet focused gentle glad golden "
    "graceful hardy honest humble jolly keen kind lively lucid lucky merry mighty misty "
    "modest nimble noble patient placid plucky polite proud quick quiet rapid ready "
    "robust rosy rustic serene sharp shiny silent sleek smooth snappy solid spry steady "
    "stellar sunny swift tidy tranquil vivid warm wise witty zesty"
).split()

NOUNS = (
    "alpha beta gamma delta sigma omega comet nebula quasar pulsar nova orbit meteor "
    "aurora galaxy zenith amber jade opal pearl ruby topaz garnet onyx quartz cobalt "
    "copper nickel silver zinc argon neon helium carbon falcon heron robin wren finch "
    "kestrel osprey raven swift lark oak maple cedar birch willow aspen alder rowan "
    "spruce larch lotus iris lily orchid tulip dahlia poppy violet basil thyme sage mint "
    "fennel dill clove ginger saffron pepper cumin anise mango lemon cherry plum peach "
    "apricot fig olive lime kiwi papaya guava melon berry acorn cobble harbor meadow "
    "canyon dune fjord glacier island lagoon mesa prairie reef ridge summit tundra"
).split()


def friendly_name(is_taken: Callable[[str], bool], rng: random.Random | None = None) -> str:
    """Draw an `adjective_noun` name for which `is_taken` is false."""
    import random  # (only the sidecar draws names: not on the CLI's start-up path)

    rng = rng or random.SystemRandom()
    for _ in range(200):
        name = f"{rng.choice(ADJECTIVES)}_{rng.choice(NOUNS)}"
        if not is_taken(name):
            return name
    for n in range(2, 10_000):
        name = f"{rng.choice(ADJECTIVES)}_{rng.choice(NOUNS)}_{n}"
        if not is_taken(name):
            return name
    raise ParaError(Code.internal, "could not find a free session name")
