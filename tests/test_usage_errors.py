"""What click/typer reject before a command runs is said in the house style: one `error:` line,
one `hint:` line (the usage and where the help is), exit 2, no `Usage:` block, no traceback; with
`--json`, the JSON error document on stdout as well."""

from __future__ import annotations

import json

import pytest

from tests.test_bad_input import clean_error, cli

CASES = {
    "a port that is not a number": (("up", "gpu", "--local-port", "abc"), "--local-port"),
    "a timeout out of range": (("up", "gpu", "--timeout", "0"), "--timeout"),
    "an unknown option": (("up", "gpu", "--bogus"), "--bogus"),
    "a missing PROFILE": (("up",), "PROFILE"),
    "an unknown command": (("bogus",), "bogus"),
    "a negative line count": (("logs", "gpu", "-n", "-1"), "-n"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_usage_error_is_one_error_and_one_hint(case: str) -> None:
    args, named = CASES[case]
    done = cli(*args)
    error, hint = clean_error(done, 2)
    assert named in error, error
    assert "Usage:" not in done.stderr + done.stdout, done.stderr
    assert "usage: colabtunnel" in hint and "--help" in hint, hint
    assert done.stdout == ""


@pytest.mark.parametrize("case", [c for c in CASES if CASES[c][0][0] == "up"])
def test_usage_error_with_json_is_the_json_error_document(case: str) -> None:
    args, named = CASES[case]
    done = cli(*args, "--json")
    error, hint = clean_error(done, 2)
    document = json.loads(done.stdout)
    assert document["schema_version"] == 1 and document["command"] == "up"
    assert document["ok"] is False
    assert document["error"]["message"] == error.removeprefix("error: ")
    assert document["error"]["hint"] == hint.removeprefix("hint: ")
    assert named in document["error"]["message"]


def test_a_missing_profile_points_at_the_profile_list() -> None:
    _, hint = clean_error(cli("up"), 2)
    assert "colabtunnel profiles list" in hint


def test_no_arguments_still_shows_the_help() -> None:
    done = cli()
    assert "Commands" in done.stdout + done.stderr
    assert "error:" not in done.stderr
