"""Host Jupyter configs that would break Colab, through the real sshd, on every flavour.

Positive matrix: Notebook 6, Notebook 7, JupyterLab and bare jupyter_server, each with one config
file that sets base_url (under both prefixes), certfile + keyfile (a real self-signed pair) and
allow_remote_access = True, placed in ~/.jupyter, in a JUPYTER_CONFIG_DIR that `activate` exports,
or in the environment's own etc/jupyter (a directory `jupyter --paths` lists): `up` succeeds (its
Colab probe passed), one note per overridden setting names file and line, the server answers plain
HTTP at the root, a request with a foreign Host header is refused, and the config's other setting
(the notebook root) still applies. One Jupyter start covers all of those.

Diagnosis matrix: each induced failure gets its own first line of `error:`, never another's.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests import flavour_venvs
from tests.browser import make_certificate
from tests.conftest import Env, wait_for
from tests.flavour_venvs import MATRIX, python_of
from tests.test_e2e_ssh import remote_jupyters

pytestmark = pytest.mark.timeout(900)  # the first run builds the flavour venvs

PREFIX = {"notebook6": "NotebookApp", "notebook7": "ServerApp", "lab": "ServerApp"}
ROOT_DIR = {"notebook6": "notebook_dir"}  # the notebook root's name per flavour, else root_dir
# The config classes each flavour reads (what a note may name): Notebook 6 ignores ServerApp,
# bare jupyter_server ignores NotebookApp, Notebook 7 and JupyterLab read both.
READS = {
    "notebook6": {"NotebookApp"},
    "notebook7": {"ServerApp", "NotebookApp"},
    "lab": {"ServerApp", "NotebookApp"},
    "server": {"ServerApp"},
}
NOTE_RE = re.compile(r"^! (.+?)(?:, line (\d+))?: (\w+)\.(\w+) = (.+) is overridden by (\S+): ")


# ---------------------------------------------------------------------------------------------
# where a config goes
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate and its key, made here."""
    return make_certificate(tmp_path_factory.mktemp("tls"), host="localhost")


def _site_packages(python: Path) -> Path:
    code = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    done = subprocess.run([str(python), "-c", code], check=True, capture_output=True, text=True)
    return Path(done.stdout.strip())


def overlay_venv(name: str, where: Path) -> Path:
    """A virtualenv of this test's own that runs flavour `name`'s packages: its etc/jupyter is a
    config directory `jupyter --paths` lists (the environment's own), written by this test only.
    The cached flavour venvs are shared with other test runs on this machine and stay untouched."""
    base = flavour_venvs.flavour_venv(name)
    overlay = where / f"env-{name}"
    subprocess.run([str(python_of(base)), "-m", "venv", "--without-pip", str(overlay)], check=True)
    packages = str(_site_packages(python_of(base)))
    pth = _site_packages(python_of(overlay)) / "flavour.pth"
    pth.write_text(f"import site; site.addsitedir({packages!r})\n")
    for script in (base / "bin").glob("jupyter*"):
        body = script.read_text().split("\n", 1)[1]
        (overlay / "bin" / script.name).write_text(f"#!{python_of(overlay)}\n{body}")
        (overlay / "bin" / script.name).chmod(0o755)
    (overlay / "share").mkdir(exist_ok=True)
    (overlay / "share" / "jupyter").symlink_to(os.path.realpath(base / "share" / "jupyter"))
    shutil.copytree(base / "etc" / "jupyter", overlay / "etc" / "jupyter")
    return overlay


@dataclass
class Placed:
    """A config file written for one test: the profile's `activate`, and the lines it set."""

    flavour: str
    path: Path
    activate: str
    lines: dict[tuple[str, str], int]  # (class, setting) -> line number


def settings_for(name: str, location: str, tls: tuple[Path, Path], root: Path) -> list[tuple]:
    """(class, setting, value) rows. base_url under both prefixes everywhere; certfile, keyfile
    and allow_remote_access under the flavour's own prefix, except in the environment's directory
    on Notebook 7 / JupyterLab, where they go under NotebookApp (moved onto ServerApp by
    notebook_shim after the command line, which a --ServerApp flag alone would not beat)."""
    own = PREFIX.get(name, "ServerApp")
    tls_prefix = "NotebookApp" if location == "env" and name in ("notebook7", "lab") else own
    return [
        ("ServerApp", "base_url", "/jupyter/"),
        ("NotebookApp", "base_url", "/nb/"),
        (tls_prefix, "certfile", str(tls[0])),
        (tls_prefix, "keyfile", str(tls[1])),
        (tls_prefix, "allow_remote_access", True),
        (own, ROOT_DIR.get(name, "root_dir"), str(root)),  # kept: not one colabtunnel overrides
    ]


def write_py(path: Path, rows: list[tuple]) -> dict[tuple[str, str], int]:
    lines = ["# left behind by an old set-up", "import os"]
    where = {}
    for section, trait, value in rows:
        lines.append(f"c.{section}.{trait} = {value!r}  # why not")
        where[(section, trait)] = len(lines)
    path.write_text("\n".join(lines) + "\n")
    return where


def write_json(path: Path, rows: list[tuple]) -> dict[tuple[str, str], int]:
    """Written line by line (not json.dumps) so the test knows each setting's line itself."""
    sections: dict[str, list[tuple[str, object]]] = {}
    for section, trait, value in rows:
        sections.setdefault(section, []).append((trait, value))
    lines, where = ["{"], {}
    for i, (section, items) in enumerate(sections.items()):
        lines.append(f'  "{section}": {{')
        for j, (trait, value) in enumerate(items):
            lines.append(
                f'    "{trait}": {json.dumps(value)}' + ("," if j < len(items) - 1 else "")
            )
            where[(section, trait)] = len(lines)
        lines.append("  }" + ("," if i < len(sections) - 1 else ""))
    lines.append("}")
    path.write_text("\n".join(lines) + "\n")
    return where


def config_name(name: str) -> str:
    return "jupyter_notebook_config" if name == "notebook6" else "jupyter_server_config"


@pytest.fixture
def placed(
    request: pytest.FixtureRequest, env: Env, tmp_path: Path, tls_pair: tuple[Path, Path]
) -> Iterator[Placed]:
    name, location = request.param
    assert env.sshd is not None
    root = tmp_path / "notebooks"
    root.mkdir()
    (root / "kept-setting-marker.txt").write_text("the config's root_dir is still in effect\n")
    rows = settings_for(name, location, tls_pair, root)
    venv = flavour_venvs.flavour_venv(name)
    activate = f"source {venv}/bin/activate"
    if location == "home":
        directory = env.sshd.remote_home / ".jupyter"
    elif location == "config-dir":
        directory = tmp_path / "config-dir"
        activate += f"\nexport JUPYTER_CONFIG_DIR={directory}"
    else:
        venv = overlay_venv(name, tmp_path)
        directory = venv / "etc" / "jupyter"
        activate = f"source {venv}/bin/activate"
    directory.mkdir(exist_ok=True)
    path = directory / (config_name(name) + (".json" if location == "config-dir" else ".py"))
    lines = (write_json if path.suffix == ".json" else write_py)(path, rows)
    try:
        yield Placed(name, path, activate, lines)
    finally:
        path.unlink(missing_ok=True)  # the sshd (and its ~/.jupyter) serves the whole session


def up_json(env: Env, profile: str, *args: str) -> tuple[int, dict, str, float]:
    started = time.monotonic()
    done = env.run("up", profile, "--json", *args, timeout=240)
    took = time.monotonic() - started
    try:
        data = json.loads(done.stdout)
    except ValueError:
        raise AssertionError(f"no JSON (exit {done.returncode}): {done.stderr}") from None
    return done.returncode, data, done.stderr, took


def notes(stderr: str) -> dict[tuple[str, int | None, str, str], str]:
    """The override notes `up` printed: (file, line, class, setting) -> the flag named."""
    found = {}
    for line in stderr.splitlines():
        match = NOTE_RE.match(line)
        if match:
            file, number, section, trait, _, flag = match.groups()
            found[(file, int(number) if number else None, section, trait)] = flag
    return found


LOCATIONS = ("home", "config-dir", "env")


@pytest.mark.parametrize(
    "placed",
    [(name, where) for name in MATRIX for where in LOCATIONS],
    ids=[f"{name}-{where}" for name in MATRIX for where in LOCATIONS],
    indirect=True,
)
def test_config_neutralised(env: Env, placed: Placed) -> None:
    name = placed.flavour
    env.write_profile("cfg", host="gpu-test", activate=placed.activate, workdir="~")
    doctor = json.loads(env.run("doctor", "cfg", "--json").stdout)
    code, data, stderr, _ = up_json(env, "cfg")
    assert code == 0 and data["ok"], stderr  # `up` ran the Colab probe through the tunnel
    port = data["tunnel"]["local_port"]
    token = data["tunnel"]["url"].split("token=", 1)[1]

    # One note per overridden setting this flavour reads, naming file and line, and no other.
    file = os.path.realpath(placed.path)
    expected = {
        (file, line, section, trait)
        for (section, trait), line in placed.lines.items()
        if section in READS[name]
        and trait in ("base_url", "certfile", "keyfile", "allow_remote_access")
    }
    seen = {(os.path.realpath(f), n, s, t) for (f, n, s, t) in notes(stderr)}
    assert seen == expected, stderr
    assert all(f"{s}.{t}" in flag for (_, _, s, t), flag in notes(stderr).items()), stderr
    # doctor: the same words, as warnings
    warned = {c["detail"] for c in doctor["checks"] if c["name"] == "config"}
    assert {c["status"] for c in doctor["checks"] if c["name"] == "config"} == {"warn"}, doctor
    assert warned == {line[2:] for line in stderr.splitlines() if NOTE_RE.match(line)}

    # Plain HTTP at the root, and the user's other setting (the notebook root) still applies.
    base = f"http://127.0.0.1:{port}"
    listing = requests.get(f"{base}/api/contents", params={"token": token}, timeout=30)
    assert listing.status_code == 200, listing.text
    assert "kept-setting-marker.txt" in {item["name"] for item in listing.json()["content"]}

    # allow_remote_access = True in the config is overridden: the Host-header check is on.
    local = requests.get(f"{base}/api/kernelspecs", params={"token": token}, timeout=30)
    assert local.status_code == 200, local.text
    evil = requests.get(
        f"{base}/api/kernelspecs",
        params={"token": token},
        headers={"Host": f"evil.example:{port}"},
        timeout=30,
    )
    assert evil.status_code == 403, (evil.status_code, evil.text[:300])
    assert remote_jupyters(env)


# ---------------------------------------------------------------------------------------------
# diagnosis matrix: every induced failure names its own cause, on the first line
# ---------------------------------------------------------------------------------------------

# The whole first `error:` line of each induced failure.
FIRST_LINES = {
    "token-in-config": r"error: a Jupyter config on gpu-test disables authentication \(\S+"
    r"jupyter_server_config\.py, line 2: ServerApp\.token = ''\); started like that, anyone who "
    r"reaches the port could run code as you",
    "token-computed": r"error: Jupyter started WITHOUT authentication: its API answered a request "
    r"that had no token; the server was stopped\. Last lines of its log:",
    "base-url": r"error: Jupyter serves under base URL '/x/', not at the root URL Colab needs "
    r"\(GET /api -> 404\); the server was stopped\. Last lines of its log:",
    "https": r"error: Jupyter answered with TLS \(HTTPS\) where the tunnel forwards plain HTTP "
    r"\(seen (?P<after>\d+\.\d) s after start\); the server was stopped\. Last lines of its log:",
    "exits": r"error: Jupyter exited during start-up\. Last lines of its log:",
    "port-taken": r"error: port \d+ is already in use on gpu-test",
    "no-ipykernel": r"error: ipykernel is not installed on gpu-test: Jupyter would start but no "
    r"kernel could run",
}
# Words of diagnoses no induced failure here may show anywhere: the timeout above all.
NEVER = ("did not answer within", "slow filesystem")


@dataclass(frozen=True)
class Induced:
    case: str
    flavour: str = "notebook7"
    config: str = ""  # ~/.jupyter/<flavour's config file>
    jupyter_args: tuple[str, ...] = ()
    busy_remote_port: bool = False


def _induced(tls: tuple[Path, Path]) -> dict[str, Induced]:
    cert, key = tls
    return {
        "token-in-config": Induced(
            "token-in-config", config="c.ServerApp.open_browser = False\nc.ServerApp.token = ''\n"
        ),
        # A value the scan cannot read: only the check after start can catch it.
        "token-computed": Induced(
            "token-computed",
            config="import os\nc.ServerApp.token = os.environ.get('NO_SUCH_VARIABLE', '')\n",
        ),
        # jupyter_args come after colabtunnel's flags, so they beat its overrides.
        "base-url": Induced("base-url", jupyter_args=("--ServerApp.base_url=/x/",)),
        "https": Induced(
            "https", jupyter_args=(f"--ServerApp.certfile={cert}", f"--ServerApp.keyfile={key}")
        ),
        "exits": Induced("exits", config="c.ServerApp.root_dir = '/nonexistent-colabtunnel'\n"),
        "port-taken": Induced("port-taken", busy_remote_port=True),
        "no-ipykernel": Induced("no-ipykernel", flavour="server-nokernel"),
        "base-url-nb6": Induced(
            "base-url", flavour="notebook6", jupyter_args=("--NotebookApp.base_url=/x/",)
        ),
        "https-server": Induced(
            "https",
            flavour="server",
            jupyter_args=(f"--ServerApp.certfile={cert}", f"--ServerApp.keyfile={key}"),
        ),
        "https-nb6": Induced(
            "https",
            flavour="notebook6",
            jupyter_args=(f"--NotebookApp.certfile={cert}", f"--NotebookApp.keyfile={key}"),
        ),
    }


INDUCED_IDS = (
    "token-in-config",
    "token-computed",
    "base-url",
    "https",
    "exits",
    "port-taken",
    "no-ipykernel",
    "base-url-nb6",
    "https-nb6",
    "https-server",
)


def _first_error_line(stderr: str) -> str:
    return next((line for line in stderr.splitlines() if line.startswith("error:")), "")


@pytest.mark.parametrize("induced_id", INDUCED_IDS)
def test_diagnosis_matrix(env: Env, tls_pair: tuple[Path, Path], induced_id: str) -> None:
    induced = _induced(tls_pair)[induced_id]
    assert env.sshd is not None
    venv = flavour_venvs.flavour_venv(induced.flavour)
    config = env.sshd.remote_home / ".jupyter" / (config_name(induced.flavour) + ".py")
    if induced.config:
        config.parent.mkdir(exist_ok=True)
        config.write_text(induced.config)
    env.write_profile(
        "diag",
        host="gpu-test",
        activate=f"source {venv}/bin/activate",
        jupyter_args=list(induced.jupyter_args),
    )
    args = ["--timeout", "60"]
    with socket.socket() as blocker:
        if induced.busy_remote_port:
            blocker.bind(("127.0.0.1", 0))
            blocker.listen()
            args += ["--remote-port", str(blocker.getsockname()[1])]
        started = time.monotonic()
        try:
            done = env.run("up", "diag", *args, timeout=120)
        finally:
            config.unlink(missing_ok=True)
        took = time.monotonic() - started
    first = _first_error_line(done.stderr)
    assert done.returncode == 1, done.stderr
    matching = [case for case, line in FIRST_LINES.items() if re.fullmatch(line, first)]
    assert matching == [induced.case], (first, done.stderr)
    assert not any(word in done.stderr for word in NEVER), done.stderr
    assert "Traceback" not in done.stderr
    if induced.case == "https":
        after = float(re.fullmatch(FIRST_LINES["https"], first)["after"])  # type: ignore[index]
        print(f"HTTPS diagnosed {after} s after Jupyter's start; `up` failed after {took:.1f} s")
        # Well inside --timeout 60: found on the first answer, not when waiting gives up. (5 s
        # held on an idle machine; Jupyter's own start-up takes longer beside 3 other workers.)
        assert after < 15.0, done.stderr
        # recognised on the first plain request Jupyter answered: its log has one SSL error
        assert done.stderr.count("SSL Error") == 1, done.stderr
    if induced.case == "exits":
        assert "/nonexistent-colabtunnel" in done.stderr  # Jupyter's own log line, quoted
    wait_for(lambda: not remote_jupyters(env), timeout=15)
