from __future__ import annotations

import copy
import dataclasses
import json
import pickle
import textwrap
from pathlib import Path

import pytest

from colabtunnel.errors import ConfigError
from colabtunnel.profiles import (
    APPS,
    LOCAL,
    Profile,
    get_profile,
    load_profiles,
    with_overrides,
)

EXAMPLE = Path(__file__).resolve().parents[1] / "profiles.example.toml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "profiles.toml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def config_error(path: Path) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_profiles(path)
    assert info.value.exit_code == 2
    assert info.value.hint
    return info.value


FULL = """\
    [profiles.gpu-box]
    host = "gpu.example.org"
    user = "alice"
    port = 2222
    identity_file = "~/.ssh/id_ed25519"
    jump = "alice@bastion.example.org"
    app = "lab"
    jupyter = "/opt/conda/bin/jupyter"
    activate = "source ~/venvs/ml/bin/activate"
    workdir = "~/notebooks"
    local_port = 8899
    remote_port = "auto"
    env = { CUDA_VISIBLE_DEVICES = "0" }
    jupyter_args = ["--debug"]
    keepalive = 30
"""


def test_full_profile_loads_with_types(tmp_path: Path) -> None:
    path = write(tmp_path, FULL)
    profile = load_profiles(path)["gpu-box"]
    assert profile == Profile(
        name="gpu-box",
        host="gpu.example.org",
        user="alice",
        port=2222,
        identity_file="~/.ssh/id_ed25519",
        jump="alice@bastion.example.org",
        app="lab",
        jupyter="/opt/conda/bin/jupyter",
        activate="source ~/venvs/ml/bin/activate",
        workdir="~/notebooks",
        local_port=8899,
        remote_port=None,
        env={"CUDA_VISIBLE_DEVICES": "0"},
        jupyter_args=("--debug",),
        keepalive=30,
        source=path,
    )
    assert not profile.is_local
    assert isinstance(profile.jupyter_args, tuple)
    assert hash(profile) == hash(load_profiles(path)["gpu-box"])


def test_profile_is_immutable_but_copyable_and_serialisable(tmp_path: Path) -> None:
    profile = load_profiles(write(tmp_path, FULL))["gpu-box"]
    with pytest.raises(TypeError):
        profile.env["X"] = "1"  # type: ignore[index]
    with pytest.raises(TypeError):
        profile.env.update(X="1")  # type: ignore[attr-defined]
    with pytest.raises(dataclasses.FrozenInstanceError):
        profile.host = "other"  # type: ignore[misc]
    assert copy.deepcopy(profile) == profile == pickle.loads(pickle.dumps(profile))
    as_json = json.loads(json.dumps(dataclasses.asdict(profile), default=str))
    assert as_json["env"] == {"CUDA_VISIBLE_DEVICES": "0"}
    assert as_json["jupyter_args"] == ["--debug"]


def test_defaults_for_a_minimal_profile(tmp_path: Path) -> None:
    profile = load_profiles(write(tmp_path, '[profiles.box]\nhost = "h"\n'))["box"]
    assert (profile.user, profile.port, profile.app, profile.jupyter) == (
        None,
        None,
        "auto",
        "jupyter",
    )
    assert (profile.local_port, profile.remote_port, profile.keepalive) == (None, None, 15)
    assert dict(profile.env) == {} and profile.jupyter_args == ()


def test_builtin_local_exists_without_a_file(tmp_path: Path) -> None:
    profiles = load_profiles(tmp_path / "missing.toml")
    assert profiles == {"local": LOCAL}
    assert LOCAL.is_local and LOCAL.source is None
    assert get_profile("local", tmp_path / "missing.toml") is LOCAL


def test_builtin_local_is_kept_next_to_file_profiles(tmp_path: Path) -> None:
    profiles = load_profiles(write(tmp_path, '[profiles.box]\nhost = "h"\n'))
    assert list(profiles) == ["box", "local"]


def test_file_profile_named_local_overrides_builtin(tmp_path: Path) -> None:
    path = write(tmp_path, '[profiles.local]\nhost = "local"\napp = "lab"\n')
    profile = get_profile("local", path)
    assert profile.app == "lab" and profile.is_local and profile.source == path


def test_host_local_is_local(tmp_path: Path) -> None:
    assert get_profile("here", write(tmp_path, '[profiles.here]\nhost = "local"\n')).is_local


def test_empty_file_has_only_local(tmp_path: Path) -> None:
    assert list(load_profiles(write(tmp_path, "# nothing yet\n"))) == ["local"]


def test_colabtunnel_home_is_honoured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLABTUNNEL_HOME", str(tmp_path))
    write(tmp_path, '[profiles.box]\nhost = "h"\n')
    assert load_profiles()["box"].source == tmp_path / "profiles.toml"
    assert get_profile("box").host == "h"


def test_unknown_profile_lists_known_ones(tmp_path: Path) -> None:
    path = write(tmp_path, '[profiles.gpu-box]\nhost = "h"\n')
    with pytest.raises(ConfigError) as info:
        get_profile("gpu-bx", path)
    assert info.value.exit_code == 2
    assert "gpu-bx" in info.value.message
    assert "gpu-box, local" in info.value.message
    assert "did you mean 'gpu-box'" in info.value.message


def test_example_file_loads_and_documents_every_key() -> None:
    profiles = load_profiles(EXAMPLE)
    assert {"gpu-box", "cluster", "lab-ws", "local"} <= profiles.keys()
    assert profiles["cluster"].jump == "asmith@bastion.example.edu:2222"
    assert "conda activate torch" in (profiles["cluster"].activate or "")
    assert profiles["cluster"].env["HF_HOME"] == "/scratch/asmith/hf-cache"
    text = EXAMPLE.read_text(encoding="utf-8")
    assert "`password`" in text and "colabtunnel secret set" in text
    for key in Profile.__dataclass_fields__.keys() - {"name", "source"}:
        assert f"# {key}" in text, f"{key} is not documented"


# --- errors ------------------------------------------------------------------------------------


def test_toml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, '[profiles.box]\nhost = "h"\nport = = 22\n')
    error = config_error(path)
    assert str(path) in error.message
    assert "line 3" in error.message
    assert "(at line" not in error.message


def test_not_utf8_names_line(tmp_path: Path) -> None:
    path = tmp_path / "profiles.toml"
    path.write_bytes(b'[profiles.box]\nhost = "\xff"\n')
    assert "line 2" in config_error(path).message


def test_unreadable_path_is_config_error(tmp_path: Path) -> None:
    (tmp_path / "profiles.toml").mkdir()
    assert "cannot read" in config_error(tmp_path / "profiles.toml").message


@pytest.mark.parametrize(
    ("text", "expected_hint"),
    [
        ('title = "x"\n', "remove"),
        ('[gpu-box]\nhost = "h"\n', "[profiles.gpu-box]"),
    ],
)
def test_unknown_top_level_key(tmp_path: Path, text: str, expected_hint: str) -> None:
    error = config_error(write(tmp_path, text))
    assert "top-level key" in error.message
    assert expected_hint in (error.hint or "")


@pytest.mark.parametrize("text", ["profiles = 3\n", '[[profiles]]\nhost = "h"\n'])
def test_profiles_must_be_a_table(tmp_path: Path, text: str) -> None:
    assert "'profiles' must be a table" in config_error(write(tmp_path, text)).message


def test_each_profile_must_be_a_table(tmp_path: Path) -> None:
    error = config_error(write(tmp_path, '[profiles]\nbox = "gpu.example.org"\n'))
    assert "profile 'box'" in error.message and "must be a table" in error.message


@pytest.mark.parametrize("name", ["-box", "my box", "a/b", ".hidden", "é"])
def test_bad_profile_names(tmp_path: Path, name: str) -> None:
    error = config_error(write(tmp_path, f'[profiles."{name}"]\nhost = "h"\n'))
    assert f"profile '{name}'" in error.message and "name is not allowed" in error.message
    assert "line 1" in error.message


def test_good_profile_names(tmp_path: Path) -> None:
    path = write(tmp_path, '[profiles."gpu.lab_2-a"]\nhost = "h"\n[profiles.9x]\nhost = "h"\n')
    assert {"gpu.lab_2-a", "9x"} <= load_profiles(path).keys()


def test_unknown_key_suggests_closest(tmp_path: Path) -> None:
    path = write(tmp_path, '[profiles.box]\nhost = "h"\n\nhostname = "x"\n')
    error = config_error(path)
    assert str(path) in error.message
    assert "profile 'box'" in error.message
    assert "unknown key 'hostname'" in error.message
    assert "line 4" in error.message
    assert "did you mean 'host'?" in (error.hint or "")


@pytest.mark.parametrize(
    ("key", "suggestion"),
    [("keep_alive", "keepalive"), ("IdentityFile", "identity_file"), ("ProxyJump", "jump")],
)
def test_did_you_mean_variants(tmp_path: Path, key: str, suggestion: str) -> None:
    error = config_error(write(tmp_path, f'[profiles.box]\nhost = "h"\n{key} = 1\n'))
    assert f"did you mean '{suggestion}'?" in (error.hint or "")


@pytest.mark.parametrize(("key", "flag"), [("password", ""), ("passphrase", " --passphrase")])
def test_secrets_are_rejected(tmp_path: Path, key: str, flag: str) -> None:
    error = config_error(write(tmp_path, f'[profiles.box]\nhost = "h"\n{key} = "hunter2"\n'))
    assert f"'{key}'" in error.message and "profile 'box'" in error.message
    assert "hunter2" not in error.message
    assert f"colabtunnel secret set box{flag}`" in (error.hint or "")


def test_missing_host(tmp_path: Path) -> None:
    path = write(tmp_path, '[profiles.ok]\nhost = "h"\n\n[profiles.box]\nuser = "alice"\n')
    error = config_error(path)
    assert "profile 'box'" in error.message and "'host'" in error.message
    assert "line 4" in error.message
    assert "host =" in (error.hint or "")


@pytest.mark.parametrize(
    ("line", "key", "words"),
    [
        ('host = ""', "host", "empty"),
        ("host = 5", "host", "string"),
        ('host = "alice@gpu"', "host", "user@host"),
        ('host = "gpu box"', "host", "spaces"),
        ("user = 5", "user", "string"),
        ('port = "22"', "port", "without quotes"),
        ("port = true", "port", "boolean"),
        ("port = 22.0", "port", "integer"),
        ("port = 0", "port", "1..65535"),
        ("port = 65536", "port", "1..65535"),
        ('port = "auto"', "port", "integer"),
        ('local_port = "any"', "local_port", "auto"),
        ("local_port = 0", "local_port", "1..65535"),
        ("remote_port = true", "remote_port", "boolean"),
        ("remote_port = 70000", "remote_port", "1..65535"),
        ("keepalive = 0", "keepalive", "1..3600"),
        ("keepalive = 3601", "keepalive", "1..3600"),
        ("keepalive = 1.5", "keepalive", "integer"),
        ("keepalive = false", "keepalive", "boolean"),
        ('idle_timeout = "5s"', "idle_timeout", "from 10s to 30 days"),
        ('idle_timeout = "31d"', "idle_timeout", "from 10s to 30 days"),
        ('idle_timeout = "soon"', "idle_timeout", 'or "off"'),
        ("idle_timeout = true", "idle_timeout", "boolean"),
        ("idle_timeout = 1.5", "idle_timeout", 'idle_timeout = "2h"'),
        ('app = "jupyterlab"', "app", "auto, notebook, lab, server"),
        ("app = 1", "app", "auto, notebook, lab, server"),
        ('env = "CUDA=0"', "env", "table"),
        ("env = { CUDA_VISIBLE_DEVICES = 0 }", "env", "must be a string"),
        ("env = { X = true }", "env", "must be a string"),
        ('env = { "BAD-NAME" = "1" }', "env", "not a valid environment variable name"),
        ('jupyter_args = "--debug"', "jupyter_args", "array of strings"),
        ("jupyter_args = [1]", "jupyter_args", "array of strings"),
        ("identity_file = 1", "identity_file", "string"),
        ('identity_file = ""', "identity_file", "empty"),
        ("workdir = []", "workdir", "string"),
        ("activate = true", "activate", "string"),
        ("jupyter = 3", "jupyter", "string"),
        ("jump = 1", "jump", "string"),
    ],
)
def test_bad_values(tmp_path: Path, line: str, key: str, words: str) -> None:
    host = "" if line.startswith("host") else 'host = "h"\n'
    path = write(tmp_path, f"[profiles.box]\n{host}{line}\n")
    error = config_error(path)
    assert str(path) in error.message
    assert "profile 'box'" in error.message
    assert f"'{key}" in error.message
    assert words in error.message + (error.hint or "")
    assert f"line {2 if host == '' else 3}" in error.message


def test_all_apps_accepted(tmp_path: Path) -> None:
    text = "".join(f'[profiles.{app}]\nhost = "h"\napp = "{app}"\n' for app in APPS)
    assert [load_profiles(write(tmp_path, text))[app].app for app in APPS] == list(APPS)


# --- overrides ---------------------------------------------------------------------------------


def test_with_overrides_skips_none_and_validates() -> None:
    base = Profile(name="box", host="h", port=22, local_port=8888)
    changed = with_overrides(base, port=None, user="bob", local_port="auto", jupyter_args=["-y"])
    assert changed.port == 22 and changed.user == "bob"
    assert changed.local_port is None and changed.jupyter_args == ("-y",)
    assert with_overrides(base) == base
    with pytest.raises(ConfigError) as info:
        with_overrides(base, local_port=99999)
    assert info.value.exit_code == 2 and "'local_port'" in info.value.message
    with pytest.raises(TypeError):
        with_overrides(base, colour="red")


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ('"2h"', 7200),
        ('"30m"', 1800),
        ('"1h30m"', 5400),
        ('"20s"', 20),
        ("600", 600),
        ('"off"', None),
    ],
)
def test_idle_timeout_is_a_duration_or_off(tmp_path: Path, value: str, seconds: int | None) -> None:
    path = write(tmp_path, f'[profiles.box]\nhost = "h"\nidle_timeout = {value}\n')
    assert load_profiles(path)["box"].idle_timeout == seconds
