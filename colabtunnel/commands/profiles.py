"""`colabtunnel profiles list / show NAME / path`: read the saved profiles without an editor."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from colabtunnel import paths
from colabtunnel.errors import ConfigError
from colabtunnel.profiles import Profile, get_profile, load_profiles


def profiles_path() -> Path:
    return paths.profiles_file()


def list_profiles() -> list[Profile]:
    return list(load_profiles().values())


def show(name: str) -> Profile:
    return get_profile(name)


@dataclass(frozen=True)
class Route:
    """How `ssh` (and so colabtunnel) reaches a profile's host, or why that cannot be told."""

    ssh: dict[str, Any] | None
    error: str | None = None
    hint: str | None = None


def route(profile: Profile) -> Route | None:
    """The resolved SSH route of `profile` (None for one that runs on this machine)."""
    from colabtunnel import sshtarget

    if profile.is_local:
        return None
    try:
        return Route(sshtarget.as_json(sshtarget.resolve(profile)))
    except ConfigError as exc:
        return Route(None, exc.message, exc.hint)


def as_dict(profile: Profile) -> dict[str, Any]:
    data = asdict(profile)
    data["env"] = dict(profile.env)
    data["jupyter_args"] = list(profile.jupyter_args)
    data["source"] = str(profile.source) if profile.source else None
    return data


def add(name: str, values: dict[str, Any], *, replace: bool = False) -> Path:
    """Add (or with `replace`, overwrite) a profile, keeping the file's comments and layout.

    The result is validated by loading it before it replaces the file, so a bad value never lands.
    """
    import tomlkit

    paths.check_profiles_home()
    path = paths.profiles_file()
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    document = tomlkit.parse(text) if text else tomlkit.document()
    if "profiles" not in document:
        document["profiles"] = tomlkit.table(is_super_table=True)
    table = document["profiles"]
    if name in table and not replace:
        raise ConfigError(
            f"profile {name!r} already exists in {path}",
            hint=f"pass --replace, or `colabtunnel profiles remove {name}` first",
        )
    entry = tomlkit.table()
    for key, value in values.items():
        if value is not None:
            entry[key] = value
    table[name] = entry
    _write_validated(path, tomlkit.dumps(document))
    return path


def remove(name: str) -> Path:
    import tomlkit

    path = paths.profiles_file()
    document = tomlkit.parse(path.read_text(encoding="utf-8")) if path.exists() else None
    if document is None or name not in document.get("profiles", {}):
        raise ConfigError(
            f"no profile {name!r} in {path}", hint="`colabtunnel profiles list` shows them"
        )
    del document["profiles"][name]
    _write_validated(path, tomlkit.dumps(document))
    return path


def _write_validated(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    candidate = path.with_name(f".{path.name}.new")
    candidate.write_text(text, encoding="utf-8")
    try:
        load_profiles(candidate)
    except ConfigError as exc:
        candidate.unlink()
        raise ConfigError(exc.message.replace(str(candidate), str(path)), exc.hint) from None
    os.replace(candidate, path)
