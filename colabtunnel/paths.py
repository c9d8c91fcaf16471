"""Where colabtunnel keeps its files: COLABTUNNEL_HOME when set, else the platform's user dirs.

Every directory is resolved here and nowhere else, so tests can redirect all of them with one variable.
"""

from __future__ import annotations

import os
from pathlib import Path

_APP = "colabtunnel"


def _home() -> Path | None:
    value = os.environ.get("COLABTUNNEL_HOME")
    return Path(value).expanduser() if value else None


def profiles_file() -> Path:
    home = _home()
    if home is not None:
        return home / "profiles.toml"
    import platformdirs

    return Path(platformdirs.user_config_dir(_APP)) / "profiles.toml"


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


def private_dir(path: Path) -> Path:
    """Create `path` (and parents) and make it 0700: it holds tokens and logs."""
    path.mkdir(parents=True, exist_ok=True)
    if os.name == "posix":
        os.chmod(path, 0o700)
    return path
