"""Jupyter flavours and the flags each one honours: a table, not branches.

Notebook 6 (classic) reads only `--NotebookApp.*`; the jupyter_server family reads `--ServerApp.*`.
A flag with the wrong prefix is silently ignored, which is how hand-made Colab set-ups break, so the
prefix comes from this table and nowhere else. So do the settings colabtunnel forces over whatever
a host's Jupyter config says (OVERRIDES): a command-line flag beats a config file in Jupyter.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from colabtunnel.errors import ColabtunnelError, ConfigError

COLAB_ORIGIN = "https://colab.research.google.com"
# Chrome builds that still send Private Network Access preflights want this header on every answer.
EXTRA_HEADERS = {"Access-Control-Allow-Private-Network": "true"}


@dataclass(frozen=True)
class Flavour:
    key: str  # stable id used in state, JSON output and tests
    label: str  # what the user reads
    subcommand: str  # `jupyter <subcommand>`
    prefix: str  # the traitlets class that owns the server settings
    package: str  # the package whose version identifies the flavour
    min_version: tuple[int, ...]
    max_version: tuple[int, ...] | None  # exclusive
    app: str  # the profile `app` value that selects this flavour
    # The config classes whose settings this flavour takes from config files.
    config_sections: tuple[str, ...]
    # A class whose config-file settings notebook_shim moves onto ServerApp AFTER the command line
    # is applied (Notebook 7, JupyterLab): a `--ServerApp.*` flag does not beat them, a flag under
    # this prefix does. Observed with notebook_shim 0.2.4: `c.NotebookApp.base_url = '/nb/'` in
    # jupyter_server_config.py wins over `--ServerApp.base_url=/`.
    shim: str | None = None


SERVER_SECTIONS = ("ServerApp", "IdentityProvider")
SHIMMED_SECTIONS = (*SERVER_SECTIONS, "NotebookApp")

FLAVOURS: tuple[Flavour, ...] = (
    Flavour(
        "notebook7",
        "Notebook 7",
        "notebook",
        "ServerApp",
        "notebook",
        (7,),
        None,
        "notebook",
        SHIMMED_SECTIONS,
        "NotebookApp",
    ),
    Flavour(
        "lab",
        "JupyterLab",
        "lab",
        "ServerApp",
        "jupyterlab",
        (3,),
        None,
        "lab",
        SHIMMED_SECTIONS,
        "NotebookApp",
    ),
    Flavour(
        "notebook6",
        "Notebook 6 (classic)",
        "notebook",
        "NotebookApp",
        "notebook",
        (5, 7),
        (7,),
        "notebook",
        ("NotebookApp",),
    ),
    Flavour(
        "server",
        "jupyter_server (bare)",
        "server",
        "ServerApp",
        "jupyter_server",
        (1, 8),
        None,
        "server",
        SERVER_SECTIONS,
    ),
)


@dataclass(frozen=True)
class Override:
    """A setting forced on every start, whatever the host's config says: Colab cannot work with
    another value. Each is one flag, so the user's other settings stay as they are."""

    trait: str
    value: str  # as it goes on the command line
    why: str  # shown in the note `up` prints when a host config set it otherwise


_PLAIN_HTTP = "the SSH tunnel is the encrypted transport; it forwards plain HTTP"
OVERRIDES: tuple[Override, ...] = (
    Override("base_url", "/", "Colab calls the API at the root of the URL it is given"),
    Override("certfile", "", _PLAIN_HTTP),
    Override("keyfile", "", _PLAIN_HTTP),
    Override(
        "allow_remote_access",
        "False",
        "it keeps Jupyter's Host-header check, its defence against DNS rebinding, "
        "on the port forwarded to this machine",
    ),
)
# `app = "auto"` takes the first installed flavour in this order: the full UIs first, so the same URL
# also opens in a browser, bare jupyter_server last.
AUTO_ORDER = ("notebook7", "lab", "notebook6", "server")

INSTALL_HINT = (
    "on the host, in the environment `activate` selects: pip install 'notebook>=7' ipykernel"
)


def parse_version(text: str | None) -> tuple[int, ...] | None:
    """Leading numeric release: "7.0.0rc2" -> (7, 0, 0); stops at the first non-numeric part."""
    if not text:
        return None
    parts: list[int] = []
    for piece in text.split("."):
        digits = re.match(r"\d+", piece)
        if digits is None:
            break
        parts.append(int(digits.group()))
        if digits.end() != len(piece):
            break
    return tuple(parts) or None


def _fits(flavour: Flavour, versions: dict[str, str | None]) -> bool:
    version = parse_version(versions.get(flavour.package))
    if version is None or version < flavour.min_version:
        return False
    return flavour.max_version is None or version < flavour.max_version


def by_key(key: str) -> Flavour:
    return next(f for f in FLAVOURS if f.key == key)


def choose(app: str, versions: dict[str, str | None], install_hint: str = INSTALL_HINT) -> Flavour:
    """Pick the flavour for profile `app` given the package versions found on the host."""
    if app == "auto":
        for key in AUTO_ORDER:
            if _fits(by_key(key), versions):
                return by_key(key)
        raise ColabtunnelError(
            "no usable Jupyter found (installed: " + _describe(versions) + ")",
            hint=install_hint,
        )
    candidates = [f for f in FLAVOURS if f.app == app]
    if not candidates:
        raise ConfigError(f"unknown app {app!r}", hint="use auto, notebook, lab or server")
    for flavour in candidates:
        if _fits(flavour, versions):
            return flavour
    need = " or ".join(f"{f.package}>={'.'.join(map(str, f.min_version))}" for f in candidates)
    raise ColabtunnelError(
        f"app = {app!r} needs {need} on the host (found: {_describe(versions)})",
        hint=f"on the host: pip install '{candidates[0].package}', or set app = \"auto\"",
    )


def _describe(versions: dict[str, str | None]) -> str:
    found = [f"{name} {ver}" for name, ver in sorted(versions.items()) if ver]
    return ", ".join(found) or "nothing"


def override_flag(prefix: str, override: Override) -> str:
    return f"--{prefix}.{override.trait}={override.value}"


def shown_flag(prefix: str, trait: str) -> str:
    """The override flag for `trait` as a person reads it (an empty value shown as '')."""
    override = next(o for o in OVERRIDES if o.trait == trait)
    return override_flag(prefix, override) + ("" if override.value else "''")


def _given(args: Sequence[str], flag: str) -> bool:
    name = flag.split("=", 1)[0]
    return any(arg == name or arg.startswith(name + "=") for arg in args)


def server_args(
    flavour: Flavour,
    port: int | str,
    *,
    allow_root: bool,
    ip: str = "127.0.0.1",
    shimmed: Collection[str] = (),
    extra: Sequence[str] = (),
    idle_timeout: int | None = None,
) -> list[str]:
    """The exact arguments after `jupyter` that make this flavour serve Colab, then `extra`.

    `shimmed`: the overridden settings a host config sets under the flavour's shim class; they
    need a flag of that class too (see Flavour.shim). `extra` (the profile's jupyter_args) come
    last and win: an override they set themselves is left out, as Jupyter exits on a flag given
    twice ("base_url only accepts one value, got 2"). `port` may be a placeholder the job fills
    in (a Slurm job picks its port on the node); `ip` is the node's address only when a cluster
    profile asks for network access. `idle_timeout` (seconds) adds idle_args.
    """
    p = flavour.prefix
    args = [
        flavour.subcommand,
        "--no-browser",
        f"--{p}.ip={ip}",
        f"--{p}.port={port}",
        f"--{p}.port_retries=0",
        f"--{p}.allow_origin={COLAB_ORIGIN}",
        f"--{p}.allow_credentials=True",
        f"--{p}.open_browser=False",
        f"--{p}.tornado_settings=" + json.dumps({"headers": EXTRA_HEADERS}),
    ]
    overrides = [override_flag(p, o) for o in OVERRIDES]
    if flavour.shim:
        overrides += [override_flag(flavour.shim, o) for o in OVERRIDES if o.trait in shimmed]
    args += [flag for flag in overrides if not _given(extra, flag)]
    if idle_timeout:
        args += [flag for flag in idle_args(flavour, idle_timeout) if not _given(extra, flag)]
    if allow_root:
        args.append("--allow-root")
    return args + list(extra)


# Jupyter's kernel manager class in every flavour (jupyter_server's AsyncMappingKernelManager and
# Notebook 6's own subclass both read this section).
KERNEL_MANAGER = "MappingKernelManager"


def cull_interval(idle_timeout: int) -> int:
    """How often Jupyter looks for idle kernels: a quarter of the timeout, 1 s to 5 min."""
    return max(1, min(300, idle_timeout // 4))


def idle_args(flavour: Flavour, idle_timeout: int) -> list[str]:
    """Jupyter's own idle ending: a kernel with no activity for `idle_timeout` s is culled, even
    with a browser tab connected (cull_connected: an open, untouched Colab tab must not hold the
    GPU), never while it runs code (cull_busy off); with no kernel left and no API request for
    as long, the server exits (it checks once a minute)."""
    k = KERNEL_MANAGER
    return [
        f"--{flavour.prefix}.shutdown_no_activity_timeout={idle_timeout}",
        f"--{k}.cull_idle_timeout={idle_timeout}",
        f"--{k}.cull_interval={cull_interval(idle_timeout)}",
        f"--{k}.cull_connected=True",
        f"--{k}.cull_busy=False",
    ]
