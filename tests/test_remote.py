"""The host scripts' renderer (colabtunnel/remote/__init__.py): strict both ways, and the Python
sent to hosts is one self-contained script that old host Pythons can read."""

from __future__ import annotations

import ast

import pytest

from colabtunnel import remote


def test_render_fills_every_placeholder_once_and_only_those() -> None:
    assert remote.render("a=__CT_A__ b=__CT_B_2__", a=1, b_2="x") == "a=1 b=x"
    # a value is never rendered again, whatever it holds
    assert remote.render("__CT_A__", a="__CT_B__") == "__CT_B__"


def test_an_unfilled_placeholder_is_refused() -> None:
    with pytest.raises(remote.RenderError, match="unfilled placeholders: B"):
        remote.render("__CT_A__ __CT_B__", a=1)


def test_a_value_nothing_asks_for_is_refused() -> None:
    with pytest.raises(remote.RenderError, match="no placeholder for: C"):
        remote.render("__CT_A__", a=1, c=2)


@pytest.mark.parametrize("name", ["inspect.py", "wait.py", "slurm_launch.py", "gpu_query.py"])
def test_host_python_is_self_contained_and_reads_as_python_3_7(name: str) -> None:
    code = remote.python(name)
    assert "from colabtunnel" not in code and "import colabtunnel" not in code
    ast.parse(code, feature_version=(3, 7))


def test_inlined_code_comes_in_place_of_its_import() -> None:
    code = remote.python("inspect.py")
    assert code.index("def alive(") < code.index("def existing(")
    assert code.count("def alive(") == 1


def test_the_run_directory_is_defined_in_one_file() -> None:
    names = sorted(p.name for p in (remote.resources.files("colabtunnel.remote")).iterdir())
    defining = [n for n in names if n.endswith(".sh") and "RUN_DIR=" in remote.text(n)]
    assert defining == ["rundir.sh"]
