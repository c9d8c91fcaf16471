"""The bash and Python that colabtunnel sends to hosts, as real files here, and their renderer.

Each script is fed to `bash -l -s` on the SSH channel's stdin, so only `bash -l -s` shows in the
host's `ps`, and prints one line `MARKER {json}` as its result, so noise from login files cannot
confuse it. Files are joined (`rundir.sh` first: the run directory is defined there only) and
filled by `render`, which fails on a placeholder it was not given and on a value no placeholder
asks for. Placeholders are `__CT_NAME__`: a plain word to bash and to Python, so shellcheck, ruff
and mypy check these files as they are.

Host Python files are complete modules for the linters; a line
`from colabtunnel.remote.NAME import ...  # host: inline` is replaced by NAME.py's own text when
sent, so the host receives one self-contained script.
"""

from __future__ import annotations

import functools
import re
import shlex
from importlib import resources

MARKER = "__COLABTUNNEL_RESULT__"
_PLACEHOLDER = re.compile(r"__CT_([A-Z][A-Z0-9_]*)__")
_INLINE = re.compile(r"^from colabtunnel\.remote\.(\w+) import [^\n]*# host: inline\n", re.M)


class RenderError(Exception):
    """A template and its values do not match: a bug in colabtunnel, never the user's input."""


@functools.cache
def text(name: str) -> str:
    """One file of this package, as written."""
    return (resources.files(__package__) / name).read_text(encoding="utf-8")


@functools.cache
def python(name: str) -> str:
    """A host Python file with its `# host: inline` imports replaced by those files' text."""
    return _INLINE.sub(lambda match: python(f"{match.group(1)}.py") + "\n", text(name))


def render(template: str, **values: str | int | float) -> str:
    """Fill every `__CT_NAME__` with values[name.lower()]; both sides must match exactly."""
    wanted = set(_PLACEHOLDER.findall(template))
    given = {name.upper() for name in values}
    if wanted - given:
        raise RenderError(f"unfilled placeholders: {', '.join(sorted(wanted - given))}")
    if given - wanted:
        raise RenderError(f"no placeholder for: {', '.join(sorted(given - wanted))}")
    return _PLACEHOLDER.sub(lambda match: str(values[match.group(1).lower()]), template)


def script(*names: str, **values: str | int | float) -> str:
    """Files joined in order (rundir.sh is always first) and rendered."""
    return render("".join(text(name) for name in ("rundir.sh", *names)), **values)


def heredoc(python_file: str, arguments: str) -> str:
    """Bash that runs a host Python file with the Python the preamble found ($PY)."""
    return f"\"$PY\" - {arguments} <<'CT_PY_EOF'\n{python(python_file)}\nCT_PY_EOF\n"


def quote(value: str) -> str:
    return shlex.quote(value)


def shell_path(path: str | None) -> str:
    """Quote a host path but keep `~` meaning the host user's home, as a user would expect."""
    if not path or path == "~":
        return '"$HOME"'
    if path.startswith("~/"):
        return '"$HOME"/' + quote(path[2:])
    return quote(path)
