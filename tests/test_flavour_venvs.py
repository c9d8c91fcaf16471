"""The flavour venv cache is keyed on what is installed, not on the requirement text: a new
release behind an unchanged `notebook>=7,<8` must build a new venv, not reuse the old one."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tests import flavour_venvs
from tests.flavour_venvs import FLAVOURS


def test_new_versions_behind_the_same_requirements_make_a_new_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    flavour = FLAVOURS["notebook7"]
    monkeypatch.setattr(flavour_venvs, "pins", lambda f: ("notebook==7.0.0", "ipykernel==6.29.0"))
    before = flavour_venvs.cache_key(flavour)
    monkeypatch.setattr(flavour_venvs, "pins", lambda f: ("notebook==7.0.1", "ipykernel==6.29.0"))
    assert flavour_venvs.cache_key(flavour) != before


def test_the_same_versions_from_other_requirement_text_share_the_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    flavour = FLAVOURS["notebook7"]
    monkeypatch.setattr(flavour_venvs, "pins", lambda f: ("notebook==7.0.0", "ipykernel==6.29.0"))
    reworded = replace(flavour, requirements=("notebook>=7.0,<8.0", "ipykernel>=6.29"))
    assert flavour_venvs.cache_key(reworded) == flavour_venvs.cache_key(flavour)


def test_versions_are_those_pip_resolves_today() -> None:
    """Real pip, real index (the answer is remembered for a day under the cache's resolved/)."""
    found = flavour_venvs.versions("notebook7")
    assert found["notebook"].startswith("7.")
    assert "jupyter-server" in found and "ipykernel" in found
