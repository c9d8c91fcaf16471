"""`colabtunnel status [PROFILE]`: the live tunnels. Stale records are cleaned on the way.

The GPUs' use now comes from each tunnel's keeper (keeper_control), asked in parallel and each
bounded by a short timeout, so one stuck host cannot make `status` hang.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass
from typing import Any

from colabtunnel import durations
from colabtunnel.jupyter.gpus import GpuReport
from colabtunnel.keeper import ended, state


def status(name: str | None = None) -> list[state.Record]:
    names = [name] if name else [record.profile for record in state.all_records()]
    records = (state.live(n) for n in names)
    return [r for r in records if r is not None]


def ended_notes(name: str | None = None) -> list[ended.Ended]:
    """Tunnels whose Jupyter ended itself (idle_timeout) since their last `up`, unless one is up
    again."""
    notes = ended.all_notes() if name is None else [n for n in [ended.read(name)] if n]
    return [n for n in notes if state.peek(n.profile) is None]


def ended_json(note: ended.Ended) -> dict[str, Any]:
    return {**asdict(note), "text": note.text()}


@dataclass(frozen=True)
class GpuUse:
    """One tunnel's GPUs now, or why that is not known."""

    report: GpuReport | None = None
    problem: str | None = None

    def lines(self, where: str) -> list[str]:
        if self.report is None:
            return [f"GPU use unknown: {self.problem}"]
        return self.report.lines(where)


def gpu_use_json(use: GpuUse | None) -> dict[str, Any] | None:
    """A tunnel's `gpu_use` in `status --json`: null when not asked (--no-gpu)."""
    if use is None:
        return None
    if use.report is None:
        return {"gpus": None, "problems": [use.problem]}
    return {"gpus": use.report.public(), "problems": list(use.report.problems)}


def _ask_all(
    records: list[state.Record], question: str, timeout: float
) -> dict[str, dict[str, Any]]:
    """Every record's keeper asked at once; each answers, or says why not (`ok` false and a
    `reason`), within its timeout."""
    from colabtunnel.keeper import control as keeper_control

    found: dict[str, dict[str, Any]] = {}

    def ask(record: state.Record) -> None:
        try:
            found[record.profile] = keeper_control.ask(
                record.profile, question, timeout=timeout, keeper_pid=record.keeper_pid
            )
        except keeper_control.Unavailable as exc:
            found[record.profile] = {"ok": False, "reason": str(exc)}

    threads = [threading.Thread(target=ask, args=(r,), daemon=True) for r in records]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return found


def _reason(answer: dict[str, Any], default: str) -> str:
    return str(answer.get("reason") or default)


def gpu_use(records: list[state.Record]) -> dict[str, GpuUse]:
    """The GPUs' use now, from every tunnel's keeper."""
    from colabtunnel.keeper.control import ASK_TIMEOUT_S

    return {
        profile: GpuUse(report=GpuReport.from_json(answer.get("gpus")))
        if answer.get("ok")
        else GpuUse(problem=_reason(answer, "the keeper could not tell"))
        for profile, answer in _ask_all(records, "gpus", ASK_TIMEOUT_S).items()
    }


JOB_ASK_S = 9.0  # the login node gives squeue 5 s, then it is "scheduler unreachable"


def job_details(records: list[state.Record]) -> dict[str, dict[str, Any]]:
    """For tunnels whose launcher has more to say (a Slurm job): what its keeper sees now; a
    keeper that cannot answer gives `problem` instead."""
    found: dict[str, dict[str, Any]] = {}
    asking = [r for r in records if r.launcher != "direct"]
    for profile, answer in _ask_all(asking, "job", JOB_ASK_S).items():
        if not answer.get("ok"):
            found[profile] = {"problem": _reason(answer, "no answer")}
        elif isinstance(answer.get("job"), dict):
            found[profile] = answer["job"]
    return found


ACTIVITY_ASK_S = 5.0  # the keeper's own 3 s for Jupyter's answer, and the local round trip


@dataclass(frozen=True)
class Idle:
    """How long since Jupyter was last used and, with idle_timeout, when it ends by itself."""

    last_activity: float | None = None  # epoch seconds
    idle_timeout: int | None = None
    problem: str | None = None

    def idle_s(self, now: float) -> float | None:
        return None if self.last_activity is None else max(0.0, now - self.last_activity)

    def ends_at(self) -> float | None:
        """The earliest moment Jupyter may end itself; it checks once a minute, so it ends up to
        a minute later."""
        if self.last_activity is None or not self.idle_timeout:
            return None
        return self.last_activity + self.idle_timeout

    def to_json(self, now: float) -> dict[str, Any]:
        idle = self.idle_s(now)
        return {
            "last_activity": self.last_activity,
            "idle_s": None if idle is None else round(idle, 1),
            "idle_timeout": self.idle_timeout,
            "ends_at": self.ends_at(),
            "problem": self.problem,
        }

    def line(self, now: float) -> str:
        idle = self.idle_s(now)
        if idle is None:
            return f"last activity unknown: {self.problem}"
        text = f"last activity {durations.short_duration(int(idle))} ago"
        ends = self.ends_at()
        if ends is not None:
            left = int(max(0.0, ends - now))
            text += (
                f" · ends when idle for {durations.short_duration(self.idle_timeout or 0)}"
                f" (in {durations.short_duration(left)} if unused)"
            )
        return text


def idle(records: list[state.Record]) -> dict[str, Idle]:
    """Every tunnel's last activity, asked of its keeper (no new SSH login)."""
    found: dict[str, Idle] = {}
    for profile, answer in _ask_all(records, "activity", ACTIVITY_ASK_S).items():
        if answer.get("ok"):
            found[profile] = Idle(answer.get("last_activity"), answer.get("idle_timeout"))
        else:
            found[profile] = Idle(problem=_reason(answer, "the keeper could not tell"))
    return found


def container_line(details: dict[str, Any]) -> str:
    """`container 3f2a9c1b7d4e (nvcr.io/nvidia/pytorch:24.05-py3) running · up 2h10m`."""
    from colabtunnel.durations import short_duration

    line = (
        f"container {details['container'] or '?'} ({details.get('image')}) {details.get('state')}"
    )
    if details.get("up_s") is not None:
        line += f" · up {short_duration(details['up_s'])}"
    return line


def job_lines(details: dict[str, Any]) -> list[str]:
    """`job 4242 RUNNING on node1 · 12:01 used, 3:47:59 left`, a warning, or why it ended."""
    if "problem" in details:
        return [f"job: unknown now ({details['problem']})"]
    if "container" in details:
        return [container_line(details)]
    if details.get("ended"):
        return [f"job {details.get('job')} ended: {details['ended']}"]
    line = f"job {details.get('job')} {details.get('state')}"
    if details.get("node"):
        line += f" on {details['node']}"
    if details.get("used") is not None:
        line += f" · {details['used']} used, {details.get('left')} left"
    lines = [line]
    if details.get("warning"):
        lines.append(f"warning: {details['warning']}")
    return lines
