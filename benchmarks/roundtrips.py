"""Round trips from a delay proxy's trace: how long the link was in use, step by step.

The delay proxy (benchmarks/delayproxy.py --trace) logs every chunk it reads. A chunk is in flight
for the proxy's one-way delay d after it was read; while nothing is in flight, both ends are
computing (Jupyter starting, a script running) and the link costs nothing. So the time during
which something is in flight, in either direction, over one round trip 2d, counts the round trips
that were waited for: an exchange of one request and its answer is 2d of it; requests in flight
at the same time (pipelined, or on two channels at once) overlap and count once.

That count does not depend on how fast the two ends compute, which the wall-clock difference
(`up` at RTT r minus `up` on loopback, over r) does: on a busy machine Jupyter's own start-up
moves by more than a round trip between two runs. It can only overstate the wall-clock cost:
an exchange that runs while another part waits for something slower (the host's Jupyter) is
counted although it delays nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Chunk:
    conn: int
    towards_target: bool
    at: float  # CLOCK_BOOTTIME seconds, when the proxy read it
    size: int


def read_trace(path: Path, since: float = 0.0) -> list[Chunk]:
    """The chunks a proxy read at or after `since`."""
    chunks = []
    if not path.exists():
        return chunks
    for line in path.read_text().splitlines():
        conn, way, at, size = line.split()
        if float(at) >= since:
            chunks.append(Chunk(int(conn), way == ">", float(at), int(size)))
    return chunks


def busy_intervals(chunks: Iterable[Chunk], delay: float) -> list[tuple[float, float]]:
    """The union of [read, read + delay) over all chunks, as sorted disjoint intervals."""
    merged: list[tuple[float, float]] = []
    for start in sorted(chunk.at for chunk in chunks):
        end = start + delay
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def overlap(intervals: Sequence[tuple[float, float]], start: float, end: float) -> float:
    """Seconds of `intervals` inside [start, end)."""
    return sum(max(0.0, min(b, end) - max(a, start)) for a, b in intervals)


@dataclass(frozen=True)
class StepCount:
    round_trips: float  # busy time / (2 * delay)
    chunks_out: int  # chunks read towards the host
    chunks_in: int  # and back


def per_step(
    chunks: Sequence[Chunk], delay: float, steps: Sequence[tuple[str, float, float]]
) -> dict[str, StepCount]:
    """Round trips and chunks in each (name, start, end) window; a window's busy time is what of
    the union lies inside it (an exchange across a boundary is split between the two steps)."""
    busy = busy_intervals(chunks, delay)
    counts = {}
    for name, start, end in steps:
        inside = [chunk for chunk in chunks if start <= chunk.at < end]
        counts[name] = StepCount(
            round_trips=overlap(busy, start, end) / (2 * delay),
            chunks_out=sum(1 for chunk in inside if chunk.towards_target),
            chunks_in=sum(1 for chunk in inside if not chunk.towards_target),
        )
    return counts
