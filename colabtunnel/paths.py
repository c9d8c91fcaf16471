"""Where colabtunnel keeps its files: COLABTUNNEL_HOME when set, else the platform's user dirs.

Every directory is resolved here and nowhere else, so tests can redirect all of them with one variable.
A COLABTUNNEL_HOME that cannot hold a directory (a regular file, or a path under one) or that cannot
be written is a configuration error naming the variable (exit 2), not an OSError deep inside a command.
"""

from __future__ import annotations

import os
from pathlib import Path

from colabtunnel.errors import ConfigError

_APP = "colabtunnel"
HOME_VAR = "COLABTUNNEL_HOME"
_HOME_HINT = f"set {HOME_VAR} to a writable directory (or unset it to use the platform's defaults)"


def _home(check: bool = True) -> Path | None:
    value = os.environ.get(HOME_VAR)
    if not value:
        return None
    home = Path(value).expanduser()
    if check:
        _check_home(home)
    return home


def _check_home(home: Path) -> None:
    """The nearest existing ancestor of `home` (itself included) must be a directory."""
    probe = home
    while not os.path.lexists(probe) and probe.parent != probe:
        probe = probe.parent
    if probe.is_dir():
        return
    what = "is not a directory" if probe == home else f"is under {probe}, which is not a directory"
    raise ConfigError(f"{HOME_VAR}={home} {what}", hint=_HOME_HINT)


def profiles_file() -> Path:
    # Unchecked: `profiles path` only shows where the file would be; reading it is checked
    # (profiles.load_profiles calls check_profiles_home()).
    home = _home(check=False)
    if home is not None:
        return home / "profiles.toml"
    import platformdirs

    return Path(platformdirs.user_config_dir(_APP)) / "profiles.toml"


def check_profiles_home() -> None:
    """Raise the COLABTUNNEL_HOME ConfigError if profiles.toml's directory cannot exist."""
    _home(check=True)


def state_dir() -> Path:
    home = _home()
    if home is not None:
        return home / "state"
    import platformdirs

    return Path(platformdirs.user_state_dir(_APP))


def log_dir() -> Path:
    home = _home()
    if home is not None:
        return home / "logs"
    import platformdirs

    return Path(platformdirs.user_log_dir(_APP))


def log_file(name: str) -> Path:
    """logs/NAME.log (a profile's keeper log), its directory created 0700."""
    return private_dir(log_dir()) / f"{name}.log"


def private_dir(path: Path) -> Path:
    """Create `path` (and parents) and make it 0700: it holds tokens and logs.

    Failing under COLABTUNNEL_HOME is that variable's fault, and says so (ConfigError, exit 2).
    Elsewhere the OSError propagates for the caller to word.
    """
    try:
        path.mkdir(parents=True, exist_ok=True)
        if os.name == "posix":
            os.chmod(path, 0o700)
        if not os.access(path, os.W_OK | os.X_OK):
            raise PermissionError(13, "Permission denied", str(path))
    except OSError as exc:
        home = _home(check=False)
        if home is None or not _is_under(path, home):
            raise
        _check_home(home)
        reason = exc.strerror or str(exc)
        if isinstance(exc, FileExistsError) or (path.exists() and not path.is_dir()):
            reason = "a file is in the way"
        raise ConfigError(
            f"{HOME_VAR}={home} is not writable: cannot create {path} ({reason})",
            hint=_HOME_HINT,
        ) from exc
    return path


def _is_under(path: Path, home: Path) -> bool:
    try:
        return path.absolute().is_relative_to(home.absolute())
    except (OSError, ValueError):
        return False


def write_private(path: Path, text: str) -> None:
    """Replace `path` with `text` atomically (a temp file beside it, then os.replace), mode 0600
    from the start: a reader sees the old file or the new one, never half of one."""
    import contextlib
    import tempfile

    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        if os.name == "posix":
            os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
