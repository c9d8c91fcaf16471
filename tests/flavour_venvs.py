"""One cached virtualenv per Jupyter flavour, for the flavour matrix (tests/test_flavour_matrix.py).

Each flavour is a real Jupyter installed from PyPI into a virtualenv of its own (`python -m venv`
plus that venv's pip). Venvs are cached between runs under

    $COLABTUNNEL_TEST_CACHE/venvs/            when that variable is set, else
    $XDG_CACHE_HOME/colabtunnel-tests/venvs/  else ~/.cache/colabtunnel-tests/venvs/

as `<name>-<sha256 of the exact distributions installed and the Python version>[:12]`. Those
distributions are what `pip install REQUIREMENTS` resolves to today (`pip install --dry-run
--report`), remembered for a day under resolved/, and a venv installs exactly them: so a new
release of Jupyter (or of anything it pulls in) builds a new venv instead of reusing one that no
longer matches what users get, and `versions(NAME)` says exactly what the suite ran against. The
home directory is the REAL one, resolved when this module is imported: the tests' autouse fixture
points HOME at a temp dir.

Publishing is atomic and safe across processes: under an exclusive lock file a venv is built in a
directory of its own beside the cache entry, checked, and only then published by renaming a
symlink onto the entry name. (A venv cannot be renamed after it is built: its scripts' shebangs and
bin/activate hold its absolute path, and colabtunnel reads the `jupyter` script's shebang to find
the host's Python. So the built directory keeps its name and the entry is a symlink to it.) A
crashed build leaves only a directory without the entry symlink, which the next build removes.

Run `python -m tests.flavour_venvs` to build (or just locate) them all ahead of the tests.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path


def _real_home() -> Path:
    """The user's real home: HOME as it was at import, else the password database."""
    home = os.environ.get("HOME") or ""
    if not home or not os.path.isdir(home):
        home = pwd.getpwuid(os.getuid()).pw_dir
    return Path(home)


REAL_HOME = _real_home()


def _cache_root() -> Path:
    if os.environ.get("COLABTUNNEL_TEST_CACHE"):
        return Path(os.environ["COLABTUNNEL_TEST_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else REAL_HOME / ".cache"
    return base / "colabtunnel-tests"


CACHE_ROOT = _cache_root()
VENVS = CACHE_ROOT / "venvs"
BUILD_TIMEOUT = 900.0  # seconds for one venv's pip install on a slow link


@dataclass(frozen=True)
class JupyterFlavour:
    """A Jupyter installation to test colabtunnel against."""

    name: str  # the venv's name in the cache
    requirements: tuple[str, ...]  # pip requirement lines
    expected: str | None  # the colabtunnel flavour key `app = "auto"` must detect (flavours.py)
    app: str  # `jupyter <app>` that serves it: notebook, lab or server
    prefix: str  # the traitlets class this flavour honours: NotebookApp or ServerApp
    describe: str


# Pins: the newest release line of each flavour that installs and serves Colab on Python 3.11.
# Notebook 6 is frozen legacy: notebook 6.5.7 (the last 6.x) requires jupyter_client<8 itself; it
# is pinned here too, and ipykernel to 6.x (ipykernel 7 requires jupyter_client>=8), so pip never
# has to search and a resolver change cannot drift it. traitlets needs no cap: 6.5.7 works with
# traitlets 5.16 (the 5.10 breakage hit notebook<6.5.5). The jupyter_server family takes the
# current major lines.
FLAVOURS: dict[str, JupyterFlavour] = {
    f.name: f
    for f in (
        JupyterFlavour(
            "notebook6",
            ("notebook==6.5.7", "jupyter_client>=7.4,<8", "ipykernel>=6.29,<7"),
            "notebook6",
            "notebook",
            "NotebookApp",
            "Notebook 6.5 (classic NotebookApp)",
        ),
        JupyterFlavour(
            "notebook7",
            ("notebook>=7,<8", "ipykernel>=6.29"),
            "notebook7",
            "notebook",
            "ServerApp",
            "Notebook 7 (on jupyter_server and JupyterLab 4)",
        ),
        JupyterFlavour(
            "lab",
            ("jupyterlab>=4,<5", "ipykernel>=6.29"),
            "lab",
            "lab",
            "ServerApp",
            "JupyterLab 4 without notebook",
        ),
        JupyterFlavour(
            "server",
            ("jupyter_server>=2,<3", "ipykernel>=6.29"),
            "server",
            "server",
            "ServerApp",
            "bare jupyter_server 2 + ipykernel",
        ),
        JupyterFlavour(
            "server-nokernel",
            ("jupyter_server>=2,<3",),
            None,  # colabtunnel must refuse it: no ipykernel
            "server",
            "ServerApp",
            "bare jupyter_server 2 without ipykernel",
        ),
    )
}
MATRIX = ("notebook6", "notebook7", "lab", "server")  # the flavours that must serve Colab

# How long each venv took to build in this process (for the report; empty when all were cached).
BUILD_SECONDS: dict[str, float] = {}


RESOLVED = CACHE_ROOT / "resolved"
RESOLVE_FOR_S = 24 * 3600.0  # how long a resolution is reused before pip is asked again


def _python_tag() -> str:
    return f"python {sys.version_info.major}.{sys.version_info.minor} {os.path.realpath(sys.base_prefix)}"


def _digest(lines: Iterable[str]) -> str:
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:12]


def pins(flavour: JupyterFlavour) -> tuple[str, ...]:
    """What `pip install REQUIREMENTS` installs today, as sorted `name==version` lines. Asked of
    pip at most once a day; if pip cannot answer (no index), the last answer is used."""
    remembered = RESOLVED / f"{flavour.name}-{_digest([*flavour.requirements, _python_tag()])}.json"
    try:
        age = time.time() - remembered.stat().st_mtime
    except OSError:
        age = None
    if age is not None and age < RESOLVE_FOR_S:
        return tuple(json.loads(remembered.read_text()))
    try:
        resolved = _resolve(flavour)
    except RuntimeError:
        if age is None:
            raise
        return tuple(json.loads(remembered.read_text()))
    RESOLVED.mkdir(parents=True, exist_ok=True)
    partial = remembered.with_name(f".{remembered.name}.{os.getpid()}")
    partial.write_text(json.dumps(resolved))
    os.replace(partial, remembered)
    return resolved


def _resolve(flavour: JupyterFlavour) -> tuple[str, ...]:
    argv = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed"]
    argv += ["--disable-pip-version-check", "--quiet", "--report", "-", *flavour.requirements]
    report = json.loads(_run(argv, _clean_env(), f"resolving {' '.join(flavour.requirements)}"))
    found = {(d["metadata"]["name"], d["metadata"]["version"]) for d in report["install"]}
    return tuple(sorted(f"{name}=={version}" for name, version in found))


def cache_key(flavour: JupyterFlavour) -> str:
    return f"{flavour.name}-{_digest([*pins(flavour), _python_tag()])}"


def versions(name: str) -> dict[str, str]:
    """Distribution -> version installed in flavour `name`'s venv (for reports and docs/tests.md)."""
    pairs = (line.split("==", 1) for line in pins(FLAVOURS[name]))
    return {dist.lower().replace("_", "-"): version for dist, version in pairs}


def venv_path(name: str) -> Path:
    """Where flavour `name`'s venv lives (whether or not it is built yet)."""
    return VENVS / cache_key(FLAVOURS[name])


def python_of(venv: Path) -> Path:
    return venv / "bin" / "python"


def flavour_venv(name: str) -> Path:
    """The venv dir of flavour `name`, built first if it is not cached. Safe across processes."""
    flavour = FLAVOURS[name]
    started = time.monotonic()
    entry, built = _cached(venv_path(name), lambda target: _build(flavour, target))
    if built:
        BUILD_SECONDS[name] = time.monotonic() - started
    return entry


# Venvs other users must run (the Slurm cluster's users): outside root's 0700 home.
SHARED_VENVS = Path(os.environ.get("COLABTUNNEL_TEST_SHARED_CACHE", "/var/cache/colabtunnel-tests"))


def system_python_venv(base: Path, flavour_name: str = "server") -> Path:
    """A venv of `base` (e.g. Debian's /usr/bin/python3, whatever its minor version) with the
    flavour's requirements, cached world-readable under SHARED_VENVS. pip resolves them for that
    interpreter itself, so a Python other than the tests' own gets what it supports."""
    flavour = FLAVOURS[flavour_name]
    tag = subprocess.run(
        [str(base), "-c", "import sys; print(sys.version)"], capture_output=True, text=True
    ).stdout.strip()
    entry = SHARED_VENVS / "venvs" / f"{flavour.name}-{_digest([*flavour.requirements, tag])}"

    def build(target: Path) -> None:
        env = _clean_env()
        _run([str(base), "-m", "venv", str(target)], env, f"{base} -m venv")
        pip = [str(python_of(target)), "-m", "pip", "install", "--disable-pip-version-check"]
        _run([*pip, "-q", *flavour.requirements], env, f"pip install for {base}")

    return _cached(entry, build)[0]


def _cached(entry: Path, build_into: Callable[[Path], None]) -> tuple[Path, bool]:
    """`entry`, built by `build_into(dir)` and published atomically if it is not there yet."""
    if _usable(entry):
        return entry, False
    entry.parent.mkdir(parents=True, exist_ok=True)
    entry.parent.chmod(0o755)
    with _locked(entry.with_name(entry.name + ".lock")):
        if _usable(entry):  # another process built it while we waited
            return entry, False
        _remove(entry)
        for stale in entry.parent.glob(entry.name + ".build-*"):
            _remove(stale)  # a crashed build of this entry (we hold its lock)
        build = Path(tempfile.mkdtemp(prefix=entry.name + ".build-", dir=entry.parent))
        build.chmod(0o755)  # mkdtemp makes it 0700; a venv is normally world-readable
        try:
            build_into(build)
            link = entry.parent / f".{entry.name}.link-{os.getpid()}"
            link.unlink(missing_ok=True)
            link.symlink_to(build.name)
            os.replace(link, entry)  # atomic publish
        except BaseException:
            _remove(build)
            raise
        for stale in entry.parent.glob(entry.name + ".build-*"):
            if stale != build:
                _remove(stale)  # e.g. left by a build whose pip outlived a killed parent
    return entry, True


def build_all(names: Iterable[str] = tuple(FLAVOURS), workers: int = 3) -> dict[str, Path]:
    """Build (or find) several venvs in parallel: pip downloads overlap with another's unpacking."""
    names = list(names)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return dict(zip(names, pool.map(flavour_venv, names), strict=True))


def _usable(entry: Path) -> bool:
    """The entry is published and its interpreter (whose base Python may be gone) still runs."""
    if not entry.is_symlink() or not python_of(entry).exists():
        return False
    done = subprocess.run(
        [str(python_of(entry)), "-c", "import jupyter_core, jupyter_server"],
        capture_output=True,
        env=_clean_env(),
        timeout=60,
        check=False,
    )
    return done.returncode == 0


def _build(flavour: JupyterFlavour, target: Path) -> None:
    env = _clean_env()
    _run([sys.executable, "-m", "venv", str(target)], env, f"python -m venv for {flavour.name}")
    exact = pins(flavour)
    pip = [str(python_of(target)), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    _run(
        [*pip, *exact], env, f"pip install {' '.join(flavour.requirements)} (as {len(exact)} pins)"
    )
    # Prove the venv is what its name says before publishing it.
    check = (
        "import importlib.metadata as m, sys\n"
        "for line in sys.argv[1:]:\n"
        "    name, version = line.split('==')\n"
        "    assert m.version(name) == version, (name, m.version(name), version)\n"
    )
    _run([str(python_of(target)), "-c", check, *exact], env, "checking the venv")


def _clean_env() -> dict[str, str]:
    """The environment for venv/pip: the real HOME (pip's download cache), none of the test's
    Python paths or virtualenv (pip would otherwise see this project as installed)."""
    env = dict(os.environ)
    for name in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PIP_USER", "PIP_TARGET", "PIP_PREFIX"):
        env.pop(name, None)
    env["HOME"] = str(REAL_HOME)
    return env


def _run(argv: list[str], env: dict[str, str], what: str) -> str:
    done = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        env=env,
        stdin=subprocess.DEVNULL,
        timeout=BUILD_TIMEOUT,
        check=False,
    )
    if done.returncode != 0:
        output = "\n".join((done.stdout + done.stderr).strip().splitlines()[-30:])
        raise RuntimeError(f"{what} failed (exit {done.returncode}):\n{output}")
    return done.stdout


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.exists():
        shutil.rmtree(path, ignore_errors=True)


def _main() -> int:
    started = time.monotonic()
    for name, path in build_all().items():
        took = BUILD_SECONDS.get(name)
        print(f"{name:16} {path}  {f'built in {took:.0f}s' if took else 'cached'}")
        found = versions(name)
        shown = ("notebook", "jupyterlab", "jupyter-server", "ipykernel", "jupyter-client")
        print("                 " + ", ".join(f"{d} {found[d]}" for d in shown if d in found))
    print(f"total {time.monotonic() - started:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(_main())
