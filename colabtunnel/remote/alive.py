"""Is a PID a live process on the host? A zombie is not (Jupyter's parent may not reap it yet).

Host code (Python 3.7+), inlined into the scripts that import it (remote/__init__.py).
"""

import os
import sys


def alive(pid: int) -> bool:
    if sys.platform == "win32":  # `up local` there: os.kill(pid, 0) would terminate it
        return _alive_on_windows(pid)
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


def _alive_on_windows(pid: int) -> bool:
    import ctypes

    kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]
    handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
    if not handle:
        return False
    code = ctypes.c_ulong()
    try:
        return bool(kernel32.GetExitCodeProcess(handle, ctypes.byref(code))) and code.value == 259
    finally:
        kernel32.CloseHandle(handle)  # 259: STILL_ACTIVE
