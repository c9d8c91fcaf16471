"""Is a PID a live process on the host? A zombie is not (Jupyter's parent may not reap it yet).

Host code (Python 3.7+), inlined into the scripts that import it (remote/__init__.py).
"""

import os


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            if fh.read().rsplit(")", 1)[1].split()[0] == "Z":
                return False
    except OSError:
        pass
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False
