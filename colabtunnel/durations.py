"""Durations as people and Slurm write them: profile values (`30m`, `1h30m`), Slurm's times
(`D-HH:MM:SS`) and the short form progress lines print. Plain functions, no colabtunnel imports,
so profiles and launchers can both use them.
"""

from __future__ import annotations

import re

_SLURM_DURATION = re.compile(r"(?:(\d+)-)?(?:(\d+):)?(?:(\d+):)?(\d+)")


def slurm_seconds(text: str) -> int | None:
    """squeue/sbatch times: `MM`, `MM:SS`, `HH:MM:SS`, `D-HH:MM:SS`, `D-HH`; None for
    UNLIMITED / NOT_SET / INVALID."""
    text = text.strip()
    match = re.fullmatch(r"(\d+)-(\d+)", text)
    if match:
        return int(match[1]) * 86400 + int(match[2]) * 3600
    match = _SLURM_DURATION.fullmatch(text)
    if match is None:
        return None
    days, a, b, last = match.groups()
    parts = [int(p) for p in (a, b) if p is not None] + [int(last)]
    if days is None and len(parts) == 1:
        return parts[0] * 60  # a bare number is minutes
    while len(parts) < 3:
        parts.insert(0, 0)
    hours, minutes, seconds = parts
    return int(days or 0) * 86400 + hours * 3600 + minutes * 60 + seconds


_HUMAN = re.compile(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")


def human_seconds(text: str) -> int | None:
    """Profile durations: `30m`, `20s`, `1h30m`, or plain seconds. None when not one."""
    text = text.strip().lower()
    if text.isdigit():
        return int(text)
    match = _HUMAN.fullmatch(text)
    if match is None or not any(match.groups()):
        return None
    hours, minutes, seconds = (int(g or 0) for g in match.groups())
    return hours * 3600 + minutes * 60 + seconds


def is_slurm_time(text: str) -> bool:
    """What `sbatch --time` accepts: minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS."""
    return bool(
        re.fullmatch(r"\d+(:\d{1,2}){0,2}", text) or re.fullmatch(r"\d+-\d+(:\d{1,2}){0,2}", text)
    )


def short_duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"
