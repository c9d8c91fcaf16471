"""Sample every process's command line from /proc until stdin closes; then print, as one JSON
line, the sample times and every distinct command line seen (hex). A process of its own, so the
test's Python does not share its interpreter lock; run as `python -m tests.cmdline_sampler`."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time

PERIOD_S = 0.01  # aim at twice the rate promised, so a late wake-up stays within it


def _sample(seen: set[bytes]) -> None:
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            fd = os.open(f"/proc/{pid}/cmdline", os.O_RDONLY)
        except OSError:
            continue
        try:
            seen.add(os.read(fd, 1 << 20))
        except OSError:
            pass
        finally:
            os.close(fd)


def main() -> int:
    # Ahead of `up` and the host's processes in the CPU queue where allowed (root), so a busy
    # two-core machine delays a sample less; it runs for seconds and mostly sleeps.
    with contextlib.suppress(OSError):
        os.nice(-10)
    done = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
    seen: set[bytes] = set()
    times: list[float] = []
    while not done.is_set():
        times.append(time.monotonic())
        _sample(seen)
        done.wait(max(0.0, times[-1] + PERIOD_S - time.monotonic()))
    print(json.dumps({"times": times, "seen": sorted(line.hex() for line in seen)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
