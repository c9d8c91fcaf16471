"""What Slurm's commands print, read into plain values; and what waiting in its queue means.

Pure functions, no I/O: the launcher runs `sbatch`, `squeue`, `sacct` and reads the job's own
event file on the login node, then hands their output here. Everything is written against the
formats those tools document (and tests/test_slurm_queue.py pins recorded outputs), so a cluster
that prints a job id with `;cluster`, a reason with commas or a state we have not seen yet is read
without guessing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# squeue's fields, `|`-separated, the reason last (it is the one that may hold anything).
SQUEUE_FORMAT = "%i|%T|%M|%L|%l|%N|%S|%r"
SACCT_FIELDS = "JobID,State,ExitCode,Reason"

ACTIVE = frozenset({"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED"})
ENDED_WHY = {
    "COMPLETED": "the job ended (its batch script exited)",
    "CANCELLED": "the job was cancelled",
    "FAILED": "the job failed",
    "TIMEOUT": "the job reached its time limit",
    "PREEMPTED": "the job was preempted by a higher-priority job",
    "NODE_FAIL": "the node running the job failed",
    "OUT_OF_MEMORY": "the job ran out of memory (raise `mem` in the profile's slurm table)",
    "BOOT_FAIL": "the node could not boot for the job",
    "DEADLINE": "the job missed its deadline",
    "REVOKED": "the job was revoked (it ran on another cluster)",
    "SPECIAL_EXIT": "the job ended with a special exit state",
}
# Pending reasons that will not clear by waiting: fail at once, with the reason.
_NEVER = frozenset(
    {
        "PartitionTimeLimit",
        "PartitionNodeLimit",
        "PartitionConfig",
        "ReqNodeNotAvail",
        "DependencyNeverSatisfied",
        "BadConstraints",
        "InvalidAccount",
        "InvalidQOS",
        "QOSJobLimit",
        "AssociationJobLimit",
        "JobHeldAdmin",
        "JobHeldUser",
    }
)
_WAITING_FOR = {
    "Resources": "waiting for resources (GPUs, CPUs or memory) to free up",
    "Priority": "other jobs are ahead in the queue",
    "BeginTime": "its start time has not come yet",
    "Dependency": "waiting for the jobs it depends on",
    "QOSMaxJobsPerUserLimit": "you have as many jobs running as your QOS allows",
    "AssocMaxJobsLimit": "your account has as many jobs running as allowed",
    "AssocGrpGRES": "your account's GPU allowance is in use",
    "QOSGrpGRES": "the QOS's GPU allowance is in use",
    "ReqNodeNotAvail": "the nodes it needs are unavailable (down, drained or reserved)",
    "PartitionTimeLimit": "its time limit is above the partition's maximum",
    "PartitionDown": "the partition is down",
    "Reservation": "waiting for its reservation",
    "None": "just submitted",
}


@dataclass(frozen=True)
class JobState:
    """One line of squeue about a job."""

    job: str
    state: str  # PENDING, RUNNING, ... (Slurm's long names)
    used: str  # time used, as squeue prints it
    left: str  # time left
    limit: str
    nodes: str  # "node1", "(null)" while pending
    start: str  # expected or actual start, "N/A"
    reason: str  # "Resources", "None", "ReqNodeNotAvail, UnavailableNodes:node1"

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    @property
    def node(self) -> str | None:
        return None if self.nodes in ("", "(null)", "None assigned") else self.nodes

    def pending_text(self) -> str:
        """`PENDING (Resources: waiting for GPUs...)` for the progress line."""
        head = self.reason.split(",")[0].strip()
        words = _WAITING_FOR.get(head) or _limit_text(head) or head
        return f"{self.state} ({head}: {words})" if head not in ("None", "") else self.state

    def never_starts(self) -> bool:
        """A pending reason that will not clear by waiting."""
        head = self.reason.split(",")[0].strip()
        return self.state == "PENDING" and (head in _NEVER or head.endswith("PerJob"))


def _limit_text(reason: str) -> str | None:
    if reason.endswith("PerJob"):
        return "the job asks more than a single job may have; ask for less"
    if reason.startswith(("AssocGrp", "QOSGrp", "AssocMax", "QOSMax")):
        return "a limit of your account or QOS is reached; it clears when your other jobs end"
    return None


def parse_job_id(sbatch_stdout: str) -> tuple[str, str | None]:
    """`sbatch --parsable` prints `JOBID` or `JOBID;CLUSTER`."""
    line = sbatch_stdout.strip().splitlines()[-1] if sbatch_stdout.strip() else ""
    job, _, cluster = line.partition(";")
    if not re.fullmatch(r"\d+(_\d+)?", job):
        raise ValueError(f"sbatch printed no job id: {sbatch_stdout.strip()!r}")
    return job, cluster or None


def parse_squeue(text: str, job: str) -> JobState | None:
    """The line of `squeue -h -t all -j JOB -o SQUEUE_FORMAT` for `job`; None when not listed."""
    for line in text.splitlines():
        fields = line.split("|", 7)
        if len(fields) == 8 and fields[0].strip() == job:
            return JobState(*(field.strip() for field in fields))
    return None


@dataclass(frozen=True)
class Accounting:
    state: str  # "CANCELLED", "TIMEOUT", ...
    by: str | None  # "CANCELLED by 1001": the uid
    exit_code: str
    reason: str


def parse_sacct(text: str, job: str) -> Accounting | None:
    """`sacct -j JOB -X -n -P -o SACCT_FIELDS`: the job's own line (not its steps)."""
    for line in text.splitlines():
        fields = line.split("|")
        if len(fields) >= 4 and fields[0] == job:
            state, _, by = fields[1].partition(" by ")
            return Accounting(state.strip(), by.strip() or None, fields[2], "|".join(fields[3:]))
    return None


@dataclass(frozen=True)
class Event:
    at: float
    name: str  # start, jupyter, warn, term, exit
    detail: str


def parse_events(text: str) -> list[Event]:
    """The job's own event file: `EPOCH NAME DETAIL` lines (the in-job launcher writes them)."""
    events = []
    for line in text.splitlines():
        parts = line.split(" ", 2)
        if len(parts) >= 2 and re.fullmatch(r"\d+(\.\d+)?", parts[0]):
            events.append(Event(float(parts[0]), parts[1], parts[2] if len(parts) > 2 else ""))
    return events


def ended_why(state: str | None, accounting: Accounting | None, events: list[Event]) -> str:
    """Why a job is gone, from squeue's last state, then sacct, then the job's own events."""
    final = state if state and state not in ACTIVE else None
    if final is None and accounting is not None and accounting.state not in ACTIVE:
        final = accounting.state
    by = f" by uid {accounting.by}" if accounting and accounting.by else ""
    if final is not None:
        return f"{final}: {ENDED_WHY.get(final, 'the job ended')}{by}"
    names = [event.name for event in events]
    if "exit" in names:
        detail = next(e.detail for e in reversed(events) if e.name == "exit")
        return f"the job's launcher exited ({detail})"
    if "term" in names:
        return "the job was stopped (SIGTERM: cancelled, preempted or out of time)"
    return "the job is gone and Slurm no longer says why"
