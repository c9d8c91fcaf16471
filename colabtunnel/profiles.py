"""Profiles: the saved connection settings of profiles.toml, as frozen, validated dataclasses.

Owns the file format (SPEC §2): reading it with tomllib, checking every key with errors that name
the file, the line, the profile and the key (exit 2), the built-in `local` profile that exists with
no file, and applying command-line overrides.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from colabtunnel import container_settings, durations, paths, slurm_settings
from colabtunnel.container_settings import ContainerSettings
from colabtunnel.errors import ConfigError
from colabtunnel.slurm_settings import SlurmSettings

APPS = ("auto", "notebook", "lab", "server")

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_TOML_POSITION_RE = re.compile(r"\s*\(at line (\d+), column (\d+)\)\s*$")
_EXAMPLE = "profiles.example.toml in the colabtunnel repository documents every key"
# Names people bring from ssh_config or other tools, mapped to ours (difflib alone misses these).
_ALIASES = {
    "hostname": "host",
    "username": "user",
    "identityfile": "identity_file",
    "identity": "identity_file",
    "key": "identity_file",
    "key_file": "identity_file",
    "proxyjump": "jump",
    "proxy_jump": "jump",
    "bastion": "jump",
    "cwd": "workdir",
    "directory": "workdir",
    "environment": "env",
    "args": "jupyter_args",
}


class FrozenEnv(dict[str, str]):
    """A read-only, hashable dict for `Profile.env`.

    A dict subclass rather than types.MappingProxyType so that dataclasses.asdict, copy, pickle and
    json.dumps keep working on profiles.
    """

    def _read_only(self, *args: object, **kwargs: object) -> NoReturn:
        raise TypeError("a profile's env is read-only: use with_overrides(profile, env=...)")

    __setitem__ = __delitem__ = __ior__ = _read_only  # every mutating method of dict
    clear = pop = popitem = setdefault = update = _read_only

    def __hash__(self) -> int:  # type: ignore[override]  # dict is unhashable; this one is frozen
        return hash(frozenset(self.items()))

    def __reduce__(self) -> tuple[type[FrozenEnv], tuple[dict[str, str]]]:
        return (type(self), (dict(self),))


@dataclass(frozen=True)
class Profile:
    """One validated profile. `None` for a port means "auto"; `env` is read-only."""

    name: str
    host: str  # "local" means: this machine, no SSH
    user: str | None = None
    port: int | None = None
    identity_file: str | None = None
    jump: str | None = None
    app: str = "auto"
    jupyter: str = "jupyter"
    activate: str | None = None
    workdir: str | None = None
    local_port: int | None = None  # None = "auto"
    remote_port: int | None = None  # None = "auto"
    env: Mapping[str, str] = field(default_factory=FrozenEnv)  # stored as a FrozenEnv
    jupyter_args: tuple[str, ...] = ()
    keepalive: int = 15
    # Seconds without activity after which Jupyter culls its kernels and exits; None = never.
    idle_timeout: int | None = None
    launcher: str = "direct"  # where Jupyter runs: launchers/ (direct, slurm, container)
    slurm: SlurmSettings | None = None  # [profiles.NAME.slurm], for launcher = "slurm"
    container: ContainerSettings | None = None  # [profiles.NAME.container], launcher = "container"
    source: Path | None = None  # the file it was read from; None for the built-in `local`

    def __post_init__(self) -> None:
        object.__setattr__(self, "env", FrozenEnv(self.env))
        object.__setattr__(self, "jupyter_args", tuple(self.jupyter_args))

    @property
    def is_local(self) -> bool:
        return self.host == "local"


LOCAL = Profile(name="local", host="local")


def load_profiles(path: Path | None = None) -> dict[str, Profile]:
    """All profiles of `path` (default: the profiles file), in file order, plus built-in `local`.

    A missing file is not an error: only `local` exists. A file profile named `local` replaces it.
    """
    if path is None:
        paths.check_profiles_home()  # a COLABTUNNEL_HOME that is a file: say so, naming it
        path = paths.profiles_file()
    text = _read_text(path)
    if text is None:
        return {LOCAL.name: LOCAL}
    profiles = {
        name: _build(name, table, _Where(str(path), name, text), path)
        for name, table in _profile_tables(_parse_toml(text, path), path, text).items()
    }
    profiles.setdefault(LOCAL.name, LOCAL)
    return profiles


def get_profile(name: str, path: Path | None = None) -> Profile:
    """The profile called `name`; an unknown name is a ConfigError listing the known ones."""
    if path is None:
        paths.check_profiles_home()
        path = paths.profiles_file()
    profiles = load_profiles(path)
    if name in profiles:
        return profiles[name]
    close = difflib.get_close_matches(name, list(profiles), n=1)
    suggestion = f" (did you mean '{close[0]}'?)" if close else ""
    raise _error(
        f"unknown profile '{name}'{suggestion}; known profiles: {', '.join(sorted(profiles))}",
        hint=f"add it with `colabtunnel profiles add {name} --host HOST` or edit {path}",
    )


def valid_name(name: str) -> bool:
    """Profile names are used in file names: letters, digits, '.', '_', '-', not first."""
    return _NAME_RE.fullmatch(name) is not None


def with_overrides(profile: Profile, **changes: object) -> Profile:
    """`profile` with the given fields replaced, skipping those whose value is None (not given).

    Values are validated like the file's ("auto" is accepted for the ports): a bad flag is exit 2.
    """
    where = _Where("command line", profile.name)
    values: dict[str, Any] = {}
    for key, value in changes.items():
        if value is None:
            continue
        if key not in _CHECKS:
            raise TypeError(f"with_overrides() got an unknown profile field {key!r}")
        values[key] = _CHECKS[key](value, key, where)
    return dataclasses.replace(profile, **values)


# --- reading the file -------------------------------------------------------------------------


def _read_text(path: Path) -> str | None:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise _error(
            f"cannot read {path}: {exc.strerror or exc}",
            hint="check that it is a readable file, or point COLABTUNNEL_HOME elsewhere",
        ) from exc
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise _error(
            f"{path}, line {line}: not valid UTF-8 text",
            hint="save the file as UTF-8",
        ) from exc


def _parse_toml(text: str, path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except RecursionError:
        raise _error(
            f"{path}: invalid TOML: arrays or tables nested too deeply",
            hint=f"a profile needs no deep nesting; {_EXAMPLE}",
        ) from None
    except tomllib.TOMLDecodeError as exc:
        reason = str(exc)
        match = _TOML_POSITION_RE.search(reason)
        if match is None:
            raise _error(f"{path}: invalid TOML: {reason}", hint=_EXAMPLE) from exc
        line, column = match.groups()
        reason = reason[: match.start()]
        raise _error(
            f"{path}, line {line}: invalid TOML: {reason} (column {column})",
            hint=f"fix the syntax on line {line}; {_EXAMPLE}",
        ) from exc
    except ValueError as exc:  # tomllib lets int()'s own errors through (a 5000-digit number)
        reason = str(exc).split(";")[0]  # drop Python's advice (sys.set_int_max_str_digits)
        raise _error(
            f"{path}: invalid TOML: {reason}",
            hint=f"no value in a profile needs that many digits; {_EXAMPLE}",
        ) from exc


def _profile_tables(data: dict[str, Any], path: Path, text: str) -> dict[str, dict[str, Any]]:
    for key, value in data.items():
        if key == "profiles":
            continue
        hint = "profiles are tables named [profiles.NAME]; remove this key"
        if isinstance(value, dict):
            hint = f"write [profiles.{key}] instead of [{key}]"
        raise _error(f"{path}: unknown top-level key '{key}'", hint=hint)
    tables = data.get("profiles", {})
    if not isinstance(tables, dict):
        raise _error(
            f"{path}: 'profiles' must be a table, got {_describe(tables)}",
            hint="write one table per profile: [profiles.NAME]",
        )
    for name, table in tables.items():
        where = _Where(str(path), name, text)
        if not _NAME_RE.fullmatch(name):
            raise where.fail(
                None,
                "this profile name is not allowed",
                "use letters, digits, '.', '_' and '-', starting with a letter or digit",
            )
        if not isinstance(table, dict):
            raise where.fail(
                None,
                f"must be a table, got {_describe(table)}",
                f'write it as [profiles.{name}] with host = "..." and other keys below it',
            )
    return tables


def _build(name: str, table: dict[str, Any], where: _Where, path: Path) -> Profile:
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key in ("password", "passphrase"):
            flag = " --passphrase" if key == "passphrase" else ""
            raise where.fail(
                key,
                f"key '{key}' is not allowed: secrets never live in profiles.toml",
                f"remove it and run `colabtunnel secret set {name}{flag}` (uses the OS keyring)",
            )
        check = _CHECKS.get(key)
        if check is None:
            raise where.fail(key, f"unknown key '{key}'", _did_you_mean(key))
        values[key] = check(value, key, where)
    if "host" not in values:
        raise where.fail(
            None,
            "missing required key 'host'",
            f'add host = "gpu.example.org" (a hostname, IP, or Host alias from ~/.ssh/config) '
            f"under [profiles.{name}]",
        )
    if "slurm" in values and values.get("launcher") != "slurm":
        raise where.fail(
            "slurm",
            'a [profiles.NAME.slurm] table needs launcher = "slurm"',
            f'add launcher = "slurm" under [profiles.{name}], or remove the slurm table',
        )
    if values.get("launcher") == "slurm":
        values.setdefault("slurm", SlurmSettings())
        if values.get("host") == "local":
            raise where.fail(
                "launcher",
                'launcher = "slurm" needs a cluster login node as host, not "local"',
                "set host to the login node (or a Host alias of it)",
            )
    if ("container" in values) != (values.get("launcher") == "container"):
        raise where.fail(
            "container" if "container" in values else "launcher",
            'launcher = "container" goes with a [profiles.NAME.container] table',
            f'under [profiles.{name}] set launcher = "container" and add '
            f'[profiles.{name}.container] with image = "...", or remove the other',
        )
    if values.get("launcher") == "container" and values.get("host") == "local":
        raise where.fail(
            "launcher",
            'launcher = "container" runs the container on an SSH host, not "local"',
            "set host to the GPU host that has Docker or Podman",
        )
    return Profile(name=name, source=path, **values)


def _did_you_mean(key: str) -> str:
    normalized = key.lower().replace("-", "_")
    guess = _ALIASES.get(normalized.replace("_", "")) or _ALIASES.get(normalized)
    if guess is None:
        close = difflib.get_close_matches(normalized, list(_CHECKS), n=1, cutoff=0.6)
        guess = close[0] if close else None
    if guess is not None:
        return f"did you mean '{guess}'? {_EXAMPLE}"
    return f"known keys: {', '.join(_CHECKS)}"


# --- where an error is, and what the value was ------------------------------------------------


def _error(message: str, hint: str | None = None) -> ConfigError:
    """A ConfigError whose message and hint are one line each, whatever names the file holds."""
    return ConfigError(_one_line(message), hint=_one_line(hint) if hint is not None else None)


def _one_line(text: str) -> str:
    """Escape what a terminal would not print as one plain line (newlines, ESC, U+2028...)."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


@dataclass(frozen=True)
class _Where:
    source: str  # the file, or "command line"
    profile: str
    text: str = ""  # the file's text, to find line numbers

    def fail(self, key: str | None, problem: str, hint: str) -> ConfigError:
        line = _line_of(self.text, self.profile, key) if self.text else None
        place = f"{self.source}, line {line}" if line else self.source
        return _error(f"{place}: profile '{self.profile}': {problem}", hint=hint)


def _line_of(text: str, profile: str, key: str | None) -> int | None:
    """Best effort: the line of `key` in [profiles.PROFILE], else the header's line, else None."""
    headers = {f"profiles.{q}{profile}{q}" for q in ("", '"', "'")}
    key_re = re.compile(rf"\s*[\"']?{re.escape(key)}[\"']?\s*[=.\[]") if key else None
    header_line = None
    for number, line in enumerate(text.splitlines(), 1):
        header = re.match(r"\s*\[([^\[\]]+)\]\s*(#.*)?$", line)
        if header:
            if header_line is not None:
                break  # left the profile's table without finding the key
            if re.sub(r"\s*\.\s*", ".", header.group(1).strip()) in headers:
                header_line = number
        elif header_line is not None and key_re is not None and key_re.match(line):
            return number
    return header_line


def _describe(value: object, show_value: bool = True) -> str:
    """`value` in TOML terms, for messages; `show_value=False` where it could be a secret (env)."""
    if isinstance(value, bool):
        kind, shown = "a boolean", str(value).lower()
    elif isinstance(value, int):
        # str() refuses ints past 4300 digits (and a 0x... literal can be that long)
        big = value.bit_length() > 64
        kind, shown = "an integer", "far out of range" if big else str(value)
    elif isinstance(value, float):
        kind, shown = "a number", str(value)
    elif isinstance(value, str):
        kind, shown = "a string", f'"{value}"'
    elif isinstance(value, list | tuple):
        return "an array"
    elif isinstance(value, Mapping):
        return "a table"
    else:
        return f"a {type(value).__name__}"
    return f"{kind} ({shown})" if show_value else kind


# --- one check per key: value from TOML (or a flag) -> value for Profile -----------------------


def _string(value: object, key: str, where: _Where) -> str:
    if not isinstance(value, str):
        raise where.fail(
            key, f"key '{key}' must be a string, got {_describe(value)}", f'quote it: {key} = "..."'
        )
    if not value.strip():
        raise where.fail(
            key, f"key '{key}' must not be empty", "remove the line to use the default"
        )
    return value


def _host(value: object, key: str, where: _Where) -> str:
    host = _string(value, key, where)
    if "@" in host:
        user, _, rest = host.rpartition("@")
        raise where.fail(
            key,
            f"key '{key}' must be a host name, not user@host",
            f'write host = "{rest}" and user = "{user}"',
        )
    if any(c.isspace() for c in host):
        raise where.fail(key, f"key '{key}' must not contain spaces", "give one host name or IP")
    return host


def _integer(value: object, key: str, where: _Where, low: int, high: int, example: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        hint = f"for example: {key} = {example}"
        if isinstance(value, str) and value.strip().isdigit():
            hint = f"write the number without quotes: {key} = {value.strip()}"
        raise where.fail(
            key, f"key '{key}' must be an integer {low}..{high}, got {_describe(value)}", hint
        )
    return value


def _port(value: object, key: str, where: _Where) -> int:
    return _integer(value, key, where, 1, 65535, "22")


def _auto_port(value: object, key: str, where: _Where) -> int | None:
    if value == "auto":
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise where.fail(
            key,
            f"key '{key}' must be \"auto\" or an integer 1..65535, got {_describe(value)}",
            f'for example: {key} = "auto" or {key} = 8888',
        )
    return value


LAUNCHERS = ("direct", "slurm", "container")  # launchers/: one module each


def _launcher(value: object, key: str, where: _Where) -> str:
    if value not in LAUNCHERS:
        raise where.fail(
            key,
            f"key '{key}' must be one of {', '.join(LAUNCHERS)}, got {_describe(value)}",
            '"direct" runs Jupyter on the host; "slurm" inside a Slurm job on a compute node; '
            '"container" inside a Docker or Podman container on the host',
        )
    return str(value)


def _keepalive(value: object, key: str, where: _Where) -> int:
    return _integer(value, key, where, 1, 3600, "15")


IDLE_TIMEOUT_RANGE_S = (10, 30 * 86400)


def _idle_timeout(value: object, key: str, where: _Where) -> int | None:
    """A duration ("2h", "30m", "1h30m", "45s", or seconds), or "off"."""
    if value in ("off", 0):
        return None
    seconds = durations.human_seconds(str(value)) if isinstance(value, str | int) else None
    low, high = IDLE_TIMEOUT_RANGE_S
    if isinstance(value, bool) or seconds is None or not low <= seconds <= high:
        raise where.fail(
            key,
            f"key '{key}' must be a duration from {low}s to {high // 86400} days, or \"off\", "
            f"got {_describe(value)}",
            f'for example: {key} = "2h" (Jupyter then exits after two hours with nothing to do)',
        )
    return seconds


def _app(value: object, key: str, where: _Where) -> str:
    if value not in APPS:
        close = difflib.get_close_matches(value, APPS, n=1) if isinstance(value, str) else []
        guess = f"did you mean '{close[0]}'? " if close else ""
        raise where.fail(
            key,
            f"key '{key}' must be one of {', '.join(APPS)}, got {_describe(value)}",
            f'{guess}"auto" detects what is installed on the host',
        )
    return str(value)


def _env(value: object, key: str, where: _Where) -> Mapping[str, str]:
    if not isinstance(value, Mapping):
        raise where.fail(
            key,
            f"key '{key}' must be a table of strings, got {_describe(value)}",
            f'for example: {key} = {{ CUDA_VISIBLE_DEVICES = "0" }}',
        )
    for name, item in value.items():
        if not isinstance(name, str) or not _ENV_NAME_RE.fullmatch(name):
            raise where.fail(
                key,
                f"'{name}' in '{key}' is not a valid environment variable name",
                "use letters, digits and '_', not starting with a digit",
            )
        if not isinstance(item, str):
            raise where.fail(
                key,
                f"'{key}.{name}' must be a string, got {_describe(item, show_value=False)}",
                f'quote the value: {name} = "..."',
            )
    return dict(value)


def _string_list(value: object, key: str, where: _Where) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise where.fail(
            key,
            f"key '{key}' must be an array of strings, got {_describe(value)}",
            f'for example: {key} = ["--ServerApp.iopub_data_rate_limit=1e10"]',
        )
    return tuple(value)


_CHECKS: dict[str, Callable[[object, str, _Where], Any]] = {
    "host": _host,
    "user": _string,
    "port": _port,
    "identity_file": _string,
    "jump": _string,
    "app": _app,
    "jupyter": _string,
    "activate": _string,
    "workdir": _string,
    "local_port": _auto_port,
    "remote_port": _auto_port,
    "env": _env,
    "jupyter_args": _string_list,
    "keepalive": _keepalive,
    "idle_timeout": _idle_timeout,
    "launcher": _launcher,
    "slurm": slurm_settings.check,
    "container": container_settings.check,
}
