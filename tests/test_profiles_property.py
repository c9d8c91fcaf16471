"""Property: any profiles.toml, however broken, either loads or raises the tool's own ConfigError.

Random documents come in three kinds: structured TOML (nested tables, arrays, every scalar type,
unicode and control characters, dates; real keys with wrong-typed values) written by tomlkit or by a
small serializer below; those same documents mutated byte by byte; and arbitrary text or bytes that
may not be TOML at all. Whatever comes in, `load_profiles` returns a dict of Profile (with `local`)
or raises ConfigError (exit 2, a one-line message and a hint) — never anything else.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import string
from pathlib import Path
from typing import Any

import pytest
import tomlkit
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

from colabtunnel.errors import EXIT_CONFIG, ConfigError
from colabtunnel.profiles import _CHECKS, Profile, load_profiles

SETTINGS = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,  # the same examples on every run: CI failures reproduce
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)

REAL_KEYS = [*_CHECKS, "password", "passphrase"]
BARE_KEY_CHARS = string.ascii_letters + string.digits + "_-"

# --- values ----------------------------------------------------------------------------------------

texts = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=20
) | st.sampled_from(
    ["", " ", "auto", "local", "22", "8888", "\x00", "\x1b[31m", "\n", "a\r\nb", "é", "\u2028", "~"]
)
integers = (
    st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.sampled_from([0, 1, 22, 65535, 65536, 70000, -1, 3600, 3601])
    | st.integers(min_value=2**64, max_value=2**1000)  # tomllib takes any size; messages must cope
)
floats = st.floats(allow_nan=True, allow_infinity=True)
datetimes = st.datetimes(min_value=dt.datetime(1, 1, 1), max_value=dt.datetime(9999, 12, 31)).map(
    lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000)
)
offset_datetimes = st.builds(
    lambda d, minutes: d.replace(tzinfo=dt.timezone(dt.timedelta(minutes=minutes))),
    datetimes,
    st.integers(min_value=-23 * 60, max_value=23 * 60),
)
scalars = (
    texts
    | integers
    | floats
    | st.booleans()
    | st.dates()
    | datetimes
    | offset_datetimes
    | st.times().map(lambda t: t.replace(microsecond=0))
)
keys = st.sampled_from(REAL_KEYS) | texts
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=12,
)
# Values a key accepts, so that documents get past one check and reach the next ones.
strings = st.sampled_from(["alice", "~/.ssh/id_ed25519", "source ~/venv/bin/activate", "x"]) | (
    texts.map(lambda s: "v" + s)
)
good_values: dict[str, st.SearchStrategy[Any]] = {
    "host": st.sampled_from(["gpu.example.org", "local", "10.0.0.1", "alias", "[::1]"]),
    "port": st.integers(1, 65535),
    "local_port": st.just("auto") | st.integers(1, 65535),
    "remote_port": st.just("auto") | st.integers(1, 65535),
    "keepalive": st.integers(1, 3600),
    "app": st.sampled_from(["auto", "notebook", "lab", "server"]),
    "env": st.dictionaries(st.sampled_from(["A", "CUDA_VISIBLE_DEVICES", "X_1"]), strings),
    "jupyter_args": st.lists(strings, max_size=3),
}
VALID_NAMES = ["gpu", "gpu-box", "a.b_c", "9x", "local", "Box2"]


def _one_in(draw: st.DrawFn, n: int) -> bool:
    return draw(st.integers(0, n - 1)) == n - 1  # not 0: Hypothesis favours small draws


@st.composite
def profile_tables(draw: st.DrawFn) -> dict[str, Any]:
    """Mostly real keys; each value good or of any type; `host` usually there."""
    table: dict[str, Any] = {}
    if not _one_in(draw, 8):
        table["host"] = draw(good_values["host"])
    for _ in range(draw(st.integers(0, 5))):
        if _one_in(draw, 8):
            key = draw(texts)
        elif _one_in(draw, 15):
            key = draw(st.sampled_from(["password", "passphrase"]))
        else:
            key = draw(st.sampled_from(list(_CHECKS)))
        good = good_values.get(key, strings)
        table[key] = draw(values) if _one_in(draw, 4) else draw(good)
    return table


@st.composite
def documents(draw: st.DrawFn) -> dict[str, Any]:
    if _one_in(draw, 15):  # anything at the top level
        return draw(st.dictionaries(keys, values, max_size=3))
    profiles: dict[str, Any] = {}
    for _ in range(draw(st.integers(0, 3))):
        name = draw(texts) if _one_in(draw, 8) else draw(st.sampled_from(VALID_NAMES))
        profiles[name] = draw(values) if _one_in(draw, 10) else draw(profile_tables())
    document: dict[str, Any] = {"profiles": profiles}
    if _one_in(draw, 15):
        document[draw(keys)] = draw(values)
    return document


# --- writing them ----------------------------------------------------------------------------------


def _toml_key(key: str) -> str:
    if key and all(c in BARE_KEY_CHARS for c in key):
        return key
    return _toml_string(key)


def _toml_string(text: str) -> str:
    # json.dumps escapes what JSON must; TOML basic strings also forbid DEL and C1 controls raw.
    out = json.dumps(text, ensure_ascii=False)
    return "".join(c if c != "\x7f" else "\\u007f" for c in out)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(type(value))


def own_serializer(document: dict[str, Any]) -> str:
    """Tables as [a."b"] headers, everything below them inline."""
    lines = []
    for key, value in document.items():
        if not isinstance(value, dict):
            lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
    for key, value in document.items():
        if isinstance(value, dict):
            plain = {k: v for k, v in value.items() if not isinstance(v, dict)}
            lines.append(f"[{_toml_key(key)}]")
            lines += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in plain.items()]
            for sub, table in value.items():
                if isinstance(table, dict):
                    lines.append(f"[{_toml_key(key)}.{_toml_key(sub)}]")
                    lines += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def tomlkit_serializer(document: dict[str, Any]) -> str | None:
    try:
        return tomlkit.dumps(document)
    except Exception:  # tomlkit refuses some values (e.g. some keys): the other writer covers them
        return None


# Snippets that stress the parser and the error path: nesting, huge numbers, odd line endings.
NASTY = [
    "x = " + "[" * 3000 + "]" * 3000,
    "x = " + "{a = " * 1500 + "1" + "}" * 1500,
    "port = " + "9" * 5000,
    "port = 0x" + "f" * 5000,
    "keepalive = 1e999999",
    "host = '''\n" + "a" * 10 + "'''",
    '[profiles."\\u0000"]\nhost = "h"',
    '[profiles.x]\r\nhost = "h"\rport = 1',
    "\ufeff[profiles.x]\nhost = 'h'",
    '[profiles.x]\nhost = "h"\n[profiles.x]\nhost = "h"',
    '[[profiles.x]]\nhost = "h"',
    '[profiles]\nx.host = "h"\nx.port = 22',
    '[profiles.x]\nenv.A.B = "1"\nhost = "h"',
    '[profiles.x]\nhost = "h"\nunknown\u2028key = 1',
]


@st.composite
def mutated(draw: st.DrawFn, base: st.SearchStrategy[str]) -> str:
    text = draw(base)
    for _ in range(draw(st.integers(0, 4))):
        position = draw(st.integers(0, len(text)))
        if draw(st.booleans()) and text:
            end = min(len(text), position + draw(st.integers(1, 5)))
            text = text[:position] + text[end:]
        else:
            text = (
                text[:position]
                + draw(texts | st.sampled_from(list("[]{}=\"'.,#\n\\")))
                + text[position:]
            )
    return text


structured = documents().map(own_serializer) | documents().map(tomlkit_serializer).filter(
    lambda t: t is not None
)
raw_text = (
    structured
    | mutated(structured)
    | mutated(st.sampled_from(NASTY))
    | st.text(max_size=200)
    | st.lists(st.sampled_from(NASTY) | structured, min_size=1, max_size=3).map("\n".join)
)
inputs = raw_text.map(lambda t: t.encode("utf-8")) | st.binary(max_size=200)

# --- the property ----------------------------------------------------------------------------------


def check(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "profiles.toml"
    path.write_bytes(data)
    try:
        profiles = load_profiles(path)
    except ConfigError as exc:
        _event("ConfigError: " + _kind(exc.message))
        assert exc.exit_code == EXIT_CONFIG
        assert exc.message and exc.hint, exc
        # One line each: a name or value from the file must not break the `error:` line apart.
        assert "\n" not in exc.message and "\r" not in exc.message, repr(exc.message)
        assert "\n" not in exc.hint and "\r" not in exc.hint, repr(exc.hint)
        return
    _event(f"loaded {len(profiles) - 1} profile(s)")
    assert isinstance(profiles, dict) and "local" in profiles
    for name, profile in profiles.items():
        assert isinstance(profile, Profile) and profile.name == name
        assert isinstance(profile.host, str) and profile.host.strip()
        hash(profile)  # frozen and hashable, whatever came in


def _event(what: str) -> None:
    if currently_in_test_context():  # not in the plain parametrised test below
        event(what)


def _kind(message: str) -> str:
    """Which rule fired, for `--hypothesis-show-statistics` (a sign the inputs reach every check)."""
    for marker in (
        "invalid TOML",
        "UTF-8",
        "top-level",
        "must be a table",
        "not allowed",
        "unknown key",
        "missing required",
        "must be",
    ):
        if marker in message:
            return marker
    return "other"


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("profiles-property")


@SETTINGS
@given(data=inputs)
@example(data=b"")
@example(data=b"\xff\xfe[profiles.x]")
@example(data="\n".join(NASTY[:4]).encode())
def test_load_profiles_loads_or_raises_config_error(scratch: Path, data: bytes) -> None:
    check(scratch, data)


@SETTINGS
@given(document=documents())
def test_structured_documents_load_or_raise_config_error(scratch: Path, document: dict) -> None:
    check(scratch, own_serializer(document).encode("utf-8"))
    dumped = tomlkit_serializer(document)
    if dumped is not None:
        check(scratch, dumped.encode("utf-8"))


@pytest.mark.parametrize("snippet", NASTY)
def test_each_nasty_snippet_alone(tmp_path: Path, snippet: str) -> None:
    check(tmp_path, snippet.encode("utf-8"))
    check(tmp_path, f"[profiles.x]\nhost = 'h'\n{snippet}\n".encode())
