"""`colabtunnel profiles list / show NAME / path`: read the saved profiles without an editor."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from colabtunnel import paths
from colabtunnel.profiles import Profile, get_profile, load_profiles


def profiles_path() -> Path:
    return paths.profiles_file()


def list_profiles() -> list[Profile]:
    return list(load_profiles().values())


def show(name: str) -> Profile:
    return get_profile(name)


def as_dict(profile: Profile) -> dict[str, Any]:
    data = asdict(profile)
    data["env"] = dict(profile.env)
    data["jupyter_args"] = list(profile.jupyter_args)
    data["source"] = str(profile.source) if profile.source else None
    return data
