"""`colabtunnel status [PROFILE]`: the live tunnels. Stale records are cleaned on the way.

The GPUs' use now comes from each tunnel's keeper (keeper_control), asked in parallel and each
bounded by a short timeout, so one stuck host cannot make `status` hang.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from colabtunnel.jupyter.gpus import GpuReport
from colabtunnel.keeper import state


def status(name: str | None = None) -> list[state.Record]:
    names = [name] if name else [record.profile for record in state.all_records()]
    records = (state.live(n) for n in names)
    return [r for r in records if r is not None]


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


def gpu_use(records: list[state.Record]) -> dict[str, GpuUse]:
    """Ask every tunnel's keeper at once; each answers, or says why not, within its timeout."""
    found: dict[str, GpuUse] = {}

    def ask(profile: str) -> None:
        found[profile] = _ask_keeper(profile)

    threads = [threading.Thread(target=ask, args=(r.profile,), daemon=True) for r in records]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return found


JOB_ASK_S = 9.0  # the login node gives squeue 5 s, then it is "scheduler unreachable"


def job_details(records: list[state.Record]) -> dict[str, dict[str, Any]]:
    """For tunnels whose launcher has more to say (a Slurm job): what its keeper sees now, asked
    in parallel; a keeper that cannot answer gives `problem` instead."""
    from colabtunnel.keeper import control as keeper_control

    found: dict[str, dict[str, Any]] = {}

    def ask(record: state.Record) -> None:
        try:
            answer = keeper_control.ask(record.profile, "job", timeout=JOB_ASK_S)
        except keeper_control.Unavailable as exc:
            found[record.profile] = {"problem": str(exc)}
            return
        if answer.get("ok") and isinstance(answer.get("job"), dict):
            found[record.profile] = answer["job"]
        elif not answer.get("ok"):
            found[record.profile] = {"problem": str(answer.get("reason") or "no answer")}

    asking = [r for r in records if r.launcher != "direct"]
    threads = [threading.Thread(target=ask, args=(r,), daemon=True) for r in asking]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return found


def job_lines(details: dict[str, Any]) -> list[str]:
    """`job 4242 RUNNING on node1 · 12:01 used, 3:47:59 left`, a warning, or why it ended."""
    if "problem" in details:
        return [f"job: unknown now ({details['problem']})"]
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


def _ask_keeper(profile: str) -> GpuUse:
    from colabtunnel.keeper import control as keeper_control

    try:
        answer = keeper_control.ask(profile, "gpus")
    except keeper_control.Unavailable as exc:
        return GpuUse(problem=str(exc))
    if not answer.get("ok"):
        return GpuUse(problem=str(answer.get("reason") or "the keeper could not tell"))
    return GpuUse(report=GpuReport.from_json(answer.get("gpus")))
