"""Flavour detection and the exact Jupyter flags each flavour gets (the silent-ignore bug)."""

from __future__ import annotations

import json

import pytest

from colabtunnel.errors import ColabtunnelError, ConfigError
from colabtunnel.jupyter.flavours import (
    COLAB_ORIGIN,
    FLAVOURS,
    by_key,
    choose,
    parse_version,
    server_args,
)

PREFIXES = ("NotebookApp", "ServerApp", "LabApp", "ServerProxy", "ExtensionApp")

# What `pip list` finds on typical hosts.
NB6_HOST = {"notebook": "6.5.7", "jupyter_server": "1.24.0", "jupyterlab": None}
NB7_HOST = {"notebook": "7.2.2", "jupyter_server": "2.14.2", "jupyterlab": "4.2.5"}
LAB_ONLY = {"notebook": None, "jupyter_server": "2.14.2", "jupyterlab": "4.2.5"}
SERVER_ONLY = {"notebook": None, "jupyter_server": "2.14.2", "jupyterlab": None}
NOTHING: dict[str, str | None] = {"notebook": None, "jupyter_server": None, "jupyterlab": None}


# --- choose ---------------------------------------------------------------------------------


@pytest.mark.parametrize("app", ["auto", "notebook"])
def test_notebook6_is_classic_with_notebookapp_prefix(app: str) -> None:
    flavour = choose(app, NB6_HOST)
    assert flavour.key == "notebook6"
    assert flavour.prefix == "NotebookApp"
    assert flavour.subcommand == "notebook"


@pytest.mark.parametrize("version", ["7.0.0", "7.2.2", "7.3.0rc1"])
@pytest.mark.parametrize("app", ["auto", "notebook"])
def test_notebook7_uses_serverapp(app: str, version: str) -> None:
    flavour = choose(app, {**NB7_HOST, "notebook": version})
    assert flavour.key == "notebook7"
    assert flavour.prefix == "ServerApp"
    assert flavour.subcommand == "notebook"


def test_only_jupyterlab4_gives_lab() -> None:
    for app in ("auto", "lab"):
        flavour = choose(app, LAB_ONLY)
        assert flavour.key == "lab"
        assert flavour.prefix == "ServerApp"
        assert flavour.subcommand == "lab"


def test_lab_chosen_explicitly_even_with_notebook7() -> None:
    assert choose("lab", NB7_HOST).key == "lab"


def test_only_jupyter_server2_gives_server() -> None:
    for app in ("auto", "server"):
        flavour = choose(app, SERVER_ONLY)
        assert flavour.key == "server"
        assert flavour.prefix == "ServerApp"
        assert flavour.subcommand == "server"


def test_auto_prefers_full_ui_over_bare_server() -> None:
    # notebook 6 with jupyter_server around (nbclassic era): still the classic notebook.
    assert choose("auto", NB6_HOST).key == "notebook6"
    assert choose("auto", NB7_HOST).key == "notebook7"


def test_nothing_installed_is_an_error_with_pip_hint() -> None:
    with pytest.raises(ColabtunnelError) as info:
        choose("auto", NOTHING)
    assert "pip install" in (info.value.hint or "")
    assert "nothing" in info.value.message


def test_too_old_notebook_is_not_usable() -> None:
    with pytest.raises(ColabtunnelError) as info:
        choose("auto", {"notebook": "5.6.0", "jupyter_server": None, "jupyterlab": None})
    assert "pip install" in (info.value.hint or "")


def test_app_lab_without_jupyterlab_is_an_error() -> None:
    with pytest.raises(ColabtunnelError) as info:
        choose("lab", NB6_HOST)
    assert "jupyterlab" in info.value.message
    assert "pip install" in (info.value.hint or "")


def test_app_server_without_jupyter_server_is_an_error() -> None:
    with pytest.raises(ColabtunnelError):
        choose("server", {"notebook": "6.5.7", "jupyter_server": None})


def test_unknown_app_is_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        choose("voila", NB7_HOST)
    assert info.value.exit_code == 2


def test_custom_install_hint_is_used() -> None:
    with pytest.raises(ColabtunnelError) as info:
        choose("auto", NOTHING, install_hint="conda install notebook")
    assert info.value.hint == "conda install notebook"


# --- server_args ------------------------------------------------------------------------------


def _settings(args: list[str]) -> dict[str, str]:
    """`--Prefix.name=value` arguments as {"Prefix.name": value}."""
    out = {}
    for arg in args:
        if arg.startswith("--") and "=" in arg:
            name, value = arg[2:].split("=", 1)
            out[name] = value
    return out


@pytest.fixture(params=[f.key for f in FLAVOURS])
def flavour_key(request: pytest.FixtureRequest) -> str:
    return request.param


def test_every_setting_uses_the_flavours_prefix_only(flavour_key: str) -> None:
    flavour = by_key(flavour_key)
    args = server_args(flavour, 9123, allow_root=False)
    settings = _settings(args)
    assert settings, args
    for name in settings:
        assert name.startswith(flavour.prefix + "."), (name, flavour.key)
    others = [p for p in PREFIXES if p != flavour.prefix]
    joined = " ".join(args)
    for other in others:
        assert f"{other}." not in joined, (other, args)


def test_subcommand_comes_first(flavour_key: str) -> None:
    flavour = by_key(flavour_key)
    assert server_args(flavour, 9123, allow_root=False)[0] == flavour.subcommand


def test_required_colab_settings(flavour_key: str) -> None:
    flavour = by_key(flavour_key)
    p = flavour.prefix
    args = server_args(flavour, 9123, allow_root=False)
    s = _settings(args)
    assert s[f"{p}.allow_origin"] == "https://colab.research.google.com"
    assert s[f"{p}.allow_origin"] == COLAB_ORIGIN
    assert not s[f"{p}.allow_origin"].endswith("/")
    assert "*" not in " ".join(args)
    assert "allow_origin_pat" not in " ".join(args)
    assert s[f"{p}.allow_credentials"] == "True"
    assert s[f"{p}.port_retries"] == "0"
    assert s[f"{p}.ip"] == "127.0.0.1"
    assert s[f"{p}.port"] == "9123"
    assert "--no-browser" in args
    # Exactly one of each: a repeated flag would make the last one win silently.
    names = [a.split("=", 1)[0] for a in args if a.startswith("--")]
    assert len(names) == len(set(names)), names


def test_private_network_header_via_tornado_settings(flavour_key: str) -> None:
    flavour = by_key(flavour_key)
    s = _settings(server_args(flavour, 9123, allow_root=False))
    tornado = json.loads(s[f"{flavour.prefix}.tornado_settings"])
    assert tornado["headers"]["Access-Control-Allow-Private-Network"] == "true"


def test_allow_root_only_when_asked(flavour_key: str) -> None:
    flavour = by_key(flavour_key)
    assert "--allow-root" not in server_args(flavour, 8888, allow_root=False)
    with_root = server_args(flavour, 8888, allow_root=True)
    assert with_root.count("--allow-root") == 1


def test_args_carry_no_token(flavour_key: str) -> None:
    joined = " ".join(server_args(by_key(flavour_key), 8888, allow_root=True)).lower()
    assert "token" not in joined


def test_colab_breaking_settings_are_overridden(flavour_key: str) -> None:
    """A host config's base_url, certfile/keyfile or allow_remote_access loses to these flags."""
    flavour = by_key(flavour_key)
    s = _settings(server_args(flavour, 9123, allow_root=False))
    p = flavour.prefix
    assert s[f"{p}.base_url"] == "/"
    assert s[f"{p}.certfile"] == s[f"{p}.keyfile"] == ""
    assert s[f"{p}.allow_remote_access"] == "False"


@pytest.mark.parametrize("key", ["notebook7", "lab"])
def test_shimmed_settings_get_a_notebookapp_flag_too(key: str) -> None:
    """notebook_shim moves a config file's NotebookApp settings onto ServerApp after the command
    line: only a NotebookApp flag beats them, and only the ones a config set get one."""
    args = server_args(by_key(key), 9123, allow_root=False, shimmed={"base_url", "keyfile"})
    notebookapp = sorted(a for a in args if a.startswith("--NotebookApp."))
    assert notebookapp == ["--NotebookApp.base_url=/", "--NotebookApp.keyfile="]


@pytest.mark.parametrize("key", ["notebook6", "server"])
def test_no_shim_no_extra_prefix(key: str) -> None:
    flavour = by_key(key)
    args = server_args(flavour, 9123, allow_root=False, shimmed={"base_url"})
    assert args == server_args(flavour, 9123, allow_root=False)


def test_jupyter_args_come_last_and_are_never_doubled(flavour_key: str) -> None:
    """Jupyter exits on a flag given twice ("base_url only accepts one value, got 2"): a setting
    the profile's jupyter_args set themselves is theirs."""
    flavour = by_key(flavour_key)
    p = flavour.prefix
    extra = [f"--{p}.base_url=/x/", f"--{p}.certfile", "/c.pem", "--debug"]
    args = server_args(flavour, 9123, allow_root=True, extra=extra)
    assert args[-len(extra) :] == extra
    names = [a.split("=", 1)[0] for a in args if a.startswith("--")]
    assert len(names) == len(set(names)), names
    assert f"--{p}.keyfile=" in args  # the ones jupyter_args leave alone stay


# --- parse_version ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("6.5.7", (6, 5, 7)),
        ("7.2.2", (7, 2, 2)),
        ("2.14.dev0", (2, 14)),
        ("4", (4,)),
        ("", None),
        (None, None),
        ("garbage", None),
        ("v7", None),
    ],
)
def test_parse_version(text: str | None, expected: tuple[int, ...] | None) -> None:
    assert parse_version(text) == expected


def test_parse_version_prerelease_major_is_right() -> None:
    version = parse_version("7.0.0rc2")
    assert version is not None
    assert version[:2] == (7, 0)
    assert version >= (7,)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("7.0.0rc2", (7, 0, 0)), ("5.0rc7", (5, 0)), ("4.0.0a1", (4, 0, 0))],
)
def test_parse_version_drops_prerelease_suffix(text: str, expected: tuple[int, ...]) -> None:
    assert parse_version(text) == expected


def test_prerelease_of_old_notebook_is_not_usable() -> None:
    with pytest.raises(ColabtunnelError):
        choose("auto", {"notebook": "5.0rc7"})


def test_idle_timeout_becomes_the_flavours_own_culling_and_shutdown(flavour_key: str) -> None:
    flavour = by_key(flavour_key)
    assert not any(
        "cull" in a or "no_activity" in a for a in server_args(flavour, 1, allow_root=False)
    )
    s = _settings(server_args(flavour, 9123, allow_root=False, idle_timeout=7200))
    # the server's section is the flavour's own (NotebookApp on Notebook 6: ServerApp is ignored)
    assert s[f"{flavour.prefix}.shutdown_no_activity_timeout"] == "7200"
    assert s["MappingKernelManager.cull_idle_timeout"] == "7200"
    assert s["MappingKernelManager.cull_interval"] == "300"
    # an open, untouched Colab tab does not keep a kernel; running code does
    assert s["MappingKernelManager.cull_connected"] == "True"
    assert s["MappingKernelManager.cull_busy"] == "False"


def test_a_users_own_culling_flag_wins(flavour_key: str) -> None:
    flavour = by_key(flavour_key)
    mine = "--MappingKernelManager.cull_interval=60"
    args = server_args(flavour, 9123, allow_root=False, extra=[mine], idle_timeout=20)
    assert [a for a in args if "cull_interval" in a] == [mine]
