"""para_rpc.names: the one validator for session names, the one for branch names,
and friendly generated names."""

from __future__ import annotations

import random
import re
import subprocess

import pytest

from para_rpc.errors import Code, ParaError
from para_rpc.names import (ADJECTIVES, MAX_BRANCH_NAME, MAX_SESSION_NAME, NOUNS, friendly_name,
                            validate_branch_name, validate_session_name)

# ---- session names --------------------------------------------------------------

VALID_SESSION_NAMES = ["a", "Z", "7", "fix-login", "fix_login", "fix-login_2", "A1b2C3",
                       "x" * MAX_SESSION_NAME, "clever_comet"]

INVALID_SESSION_NAMES = {
    "path traversal": "../x",
    "dot-dot alone": "..",
    "absolute path": "/etc/passwd",
    "slash": "a/b",
    "option-like": "-rf",
    "double-dash option": "--help",
    "empty": "",
    "500 characters": "a" * 500,
    "one over the limit": "a" * (MAX_SESSION_NAME + 1),
    "Cyrillic a lookalike": "b\u0430d",        # 'bаd' with U+0430
    "full-width letters": "\uff46\uff4f\uff4f",  # 'ｆｏｏ'
    "zero-width space": "foo\u200bbar",
    "NUL byte": "foo\0bar",
    "newline": "foo\nbar",
    "carriage return": "foo\rbar",
    "tab": "foo\tbar",
    "space": "foo bar",
    "leading dot": ".hidden",
    "dot inside": "a.b",
    "trailing dash": "name-",
    "leading underscore": "_name",
    "doubled dash": "a--b",
    "doubled underscore": "a__b",
    "shell substitution": "$(touch pwned)",
    "glob": "*",
    "tilde": "~root",
    "backslash": "a\\b",
    "accented letter": "caf\u00e9",
}


@pytest.mark.parametrize("name", VALID_SESSION_NAMES)
def test_valid_session_names_are_returned_unchanged(name):
    assert validate_session_name(name) == name


@pytest.mark.parametrize("name", list(INVALID_SESSION_NAMES.values()), ids=list(INVALID_SESSION_NAMES))
def test_invalid_session_names_are_refused_as_invalid_input(name):
    with pytest.raises(ParaError) as exc:
        validate_session_name(name)
    assert exc.value.code is Code.invalid_input
    message = exc.value.message
    assert "session name" in message
    # The message is one printable line: hostile input is shown escaped, long input truncated.
    assert message.isprintable(), repr(message)
    assert len(message) < 300


@pytest.mark.parametrize("name", ["archived", "Archived"])
def test_the_archive_namespace_is_not_a_session_name(name):
    # A branch para/archived would block every para/archived/<stamp>/<name> archive.
    with pytest.raises(ParaError) as exc:
        validate_session_name(name)
    assert exc.value.code is Code.invalid_input and "reserved" in exc.value.message


@pytest.mark.parametrize("value", [None, 42, b"bytes", ["a"]])
def test_non_string_session_names_are_refused(value):
    with pytest.raises(ParaError) as exc:
        validate_session_name(value)
    assert exc.value.code is Code.invalid_input


def test_overlong_session_name_message_states_the_limit():
    with pytest.raises(ParaError) as exc:
        validate_session_name("a" * 500)
    assert "500" in exc.value.message and str(MAX_SESSION_NAME) in exc.value.message


# ---- branch names: the validator agrees with git ----------------------------------

# Names whose validity does not depend on repository state (no "@{-1}", "@").
BRANCH_TABLE = [
    "main", "master", "feature/x", "feature/login-form", "fix_1.2", "v1.0/rc", "a@b", "a@", "x/HEAD",
    "UPPER/lower", "a-b_c.d", "a" * MAX_BRANCH_NAME,
    "a..b", "a//b", "/a", "a/", "a.", "a.lock", "foo.lock/bar", "x/y.lock", "a/.b", ".a", "a/./b", "../x",
    "-a", "-rf", "a b", "a\tb", "a\nb", "a~b", "a^b", "a:b", "a?b", "a*b", "a[b", "a\\b", "a@{b", "@{u}",
    "a\x7fb", "a\x01b", "HEAD",
]

# Where para is deliberately stricter than git: git accepts these, para refuses them.
STRICTER_THAN_GIT = {
    "non-ASCII": "caf\u00e9",
    "Cyrillic lookalike": "m\u0430in",
    "full-width": "\uff4d\uff41\uff49\uff4e",
    "zero-width space": "ma\u200bin",
    "over the length limit": "a" * (MAX_BRANCH_NAME + 1),
    "full ref name": "refs/heads/x",
    "lone @": "@",
}


def git_accepts_branch(name: str, cwd) -> bool:
    res = subprocess.run(["git", "check-ref-format", "--branch", name], cwd=cwd, capture_output=True,
                         stdin=subprocess.DEVNULL)
    return res.returncode == 0


def para_accepts_branch(name: str) -> bool:
    try:
        return validate_branch_name(name) == name
    except ParaError as e:
        assert e.code is Code.invalid_input
        assert e.message.isprintable(), repr(e.message)
        return False


@pytest.mark.parametrize("name", BRANCH_TABLE, ids=[repr(n)[:40] for n in BRANCH_TABLE])
def test_branch_validator_agrees_with_git_check_ref_format(name, repo):
    assert para_accepts_branch(name) == git_accepts_branch(name, repo)


@pytest.mark.parametrize("name", list(STRICTER_THAN_GIT.values()), ids=list(STRICTER_THAN_GIT))
def test_branch_validator_is_stricter_than_git_by_design(name, repo):
    assert git_accepts_branch(name, repo)
    assert not para_accepts_branch(name)


def test_branch_validator_names_what_is_being_validated():
    with pytest.raises(ParaError) as exc:
        validate_branch_name("a..b", "base branch")
    assert exc.value.message.startswith("invalid base branch 'a..b'")
    with pytest.raises(ParaError) as exc:
        validate_branch_name("", "branch prefix")
    assert exc.value.message == "branch prefix is empty"


def test_nul_in_branch_name_is_refused():
    # git cannot even receive this in argv, so it is checked here only.
    assert not para_accepts_branch("a\0b")


# ---- friendly names ----------------------------------------------------------------

def test_every_friendly_word_pair_is_a_valid_session_name():
    for adjective in ADJECTIVES:
        for noun in NOUNS:
            validate_session_name(f"{adjective}_{noun}")


def test_friendly_name_is_adjective_underscore_noun_and_not_taken():
    taken = set()
    rng = random.Random(1)
    for _ in range(50):
        name = friendly_name(taken.__contains__, rng)
        adjective, noun = name.split("_")
        assert adjective in ADJECTIVES and noun in NOUNS
        assert name not in taken
        taken.add(name)


def test_friendly_name_falls_back_to_a_numbered_name_when_every_pair_is_taken():
    name = friendly_name(lambda n: re.fullmatch(r"[a-z]+_[a-z]+", n) is not None, random.Random(2))
    assert re.fullmatch(r"[a-z]+_[a-z]+_\d+", name)
    validate_session_name(name)


def test_friendly_name_gives_up_with_an_error_rather_than_looping_forever():
    with pytest.raises(ParaError) as exc:
        friendly_name(lambda n: True, random.Random(3))
    assert exc.value.code is Code.internal
