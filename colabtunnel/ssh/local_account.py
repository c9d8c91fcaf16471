"""Who the laptop's user is, the way OpenSSH answers it: the password database, not $HOME.

Both the ssh_config reader (sshconfig.py) and the token expansion (sshtokens.py) need this; it
lives here so that neither has to import the other.
"""

from __future__ import annotations

import getpass
import os
import sys
from pathlib import Path


def user_home() -> Path:
    """The home directory OpenSSH uses for `~`, `%d` and ~/.ssh: the password database's entry.

    Not $HOME: `ssh` ignores it, and "colabtunnel reaches what `ssh` reaches" must hold for users
    whose HOME points elsewhere (sudo -E, some cluster set-ups).
    """
    if sys.platform != "win32":
        import pwd

        try:
            return Path(pwd.getpwuid(os.getuid()).pw_dir)
        except KeyError:
            pass
    return Path.home()


def local_user() -> str:
    if sys.platform != "win32":
        import pwd

        try:
            return pwd.getpwuid(os.getuid()).pw_name
        except KeyError:
            pass
    return getpass.getuser()
