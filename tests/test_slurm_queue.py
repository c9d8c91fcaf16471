"""Slurm's outputs, as its commands print them, read by colabtunnel/launchers/slurm_queue.py."""

from __future__ import annotations

import pytest

from colabtunnel import durations
from colabtunnel.launchers import slurm_queue as q


@pytest.mark.parametrize(
    ("printed", "expected"),
    [
        ("4242\n", ("4242", None)),
        ("4242;cluster-a\n", ("4242", "cluster-a")),
        ("sbatch: warning: something\n4243\n", ("4243", None)),
        ("77_3\n", ("77_3", None)),
    ],
)
def test_job_id(printed: str, expected: tuple[str, str | None]) -> None:
    assert q.parse_job_id(printed) == expected


@pytest.mark.parametrize("printed", ["", "Submitted batch job\n", "abc;x\n"])
def test_no_job_id(printed: str) -> None:
    with pytest.raises(ValueError):
        q.parse_job_id(printed)


SQUEUE = (
    "17|PENDING|0:00|4:00:00|4:00:00|(null)|2026-11-30T14:05:00|Resources\n"
    "18|PENDING|0:00|1:00:00|1:00:00|(null)|N/A|ReqNodeNotAvail, UnavailableNodes:node[1-2]\n"
    "19|RUNNING|12:01|3:47:59|4:00:00|gpu012|2026-11-30T10:00:00|None\n"
    "20|PENDING|0:00|10:00|10:00|(null)|N/A|QOSMaxGRESPerJob\n"
    "21|CANCELLED|0:03|9:57|10:00|node1|2026-11-30T10:00:00|None\n"
    "22|PENDING|0:00|10:00|10:00|(null)|N/A|a|reason|with|bars\n"
)


def test_squeue_lines() -> None:
    pending = q.parse_squeue(SQUEUE, "17")
    assert pending is not None and pending.active and pending.node is None
    assert (
        pending.pending_text()
        == "PENDING (Resources: waiting for resources (GPUs, CPUs or memory) to free up)"
    )
    assert not pending.never_starts()
    unavailable = q.parse_squeue(SQUEUE, "18")
    assert unavailable is not None and unavailable.never_starts()
    assert unavailable.reason == "ReqNodeNotAvail, UnavailableNodes:node[1-2]"
    running = q.parse_squeue(SQUEUE, "19")
    assert running is not None and running.node == "gpu012" and running.state == "RUNNING"
    assert durations.slurm_seconds(running.left) == 3 * 3600 + 47 * 60 + 59
    per_job = q.parse_squeue(SQUEUE, "20")
    assert per_job is not None and per_job.never_starts()
    assert "more than a single job" in per_job.pending_text()
    ended = q.parse_squeue(SQUEUE, "21")
    assert ended is not None and not ended.active
    assert q.parse_squeue(SQUEUE, "22").reason == "a|reason|with|bars"  # type: ignore[union-attr]
    assert q.parse_squeue(SQUEUE, "1") is None
    assert q.parse_squeue("", "17") is None


@pytest.mark.parametrize(
    "state",
    ["PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "REQUEUED"],
)
def test_active_states(state: str) -> None:
    job = q.JobState("1", state, "0:00", "1:00", "1:00", "(null)", "N/A", "None")
    assert job.active


@pytest.mark.parametrize("state", sorted(q.ENDED_WHY))
def test_every_end_state_has_its_words(state: str) -> None:
    assert q.ended_why(state, None, []).startswith(f"{state}: ")
    assert q.ENDED_WHY[state] in q.ended_why(state, None, [])


def test_sacct_and_who_cancelled() -> None:
    text = "31|CANCELLED by 1001|0:15|None\n31.batch|CANCELLED|0:15|\n"
    acct = q.parse_sacct(text, "31")
    assert acct == q.Accounting("CANCELLED", "1001", "0:15", "None")
    assert q.ended_why(None, acct, []) == "CANCELLED: the job was cancelled by uid 1001"
    assert q.parse_sacct("", "31") is None


def test_events_as_the_last_word() -> None:
    events = q.parse_events(
        "1700000000 start node1\n1700000003.5 jupyter port 40001 pid 99\n"
        "not an event\n1700000600 warn time limit in 600 s\n1700001200 term\n"
    )
    assert [e.name for e in events] == ["start", "jupyter", "warn", "term"]
    assert events[1].detail == "port 40001 pid 99"
    assert "SIGTERM" in q.ended_why(None, None, events)
    assert "exited (1)" in q.ended_why(None, None, [*events, q.Event(1.0, "exit", "1")])
    assert "no longer says" in q.ended_why(None, None, [])


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("5", 300),
        ("5:30", 330),
        ("1:05:30", 3930),
        ("2-01:00:00", 2 * 86400 + 3600),
        ("2-01", 2 * 86400 + 3600),
        ("0:00", 0),
        ("UNLIMITED", None),
        ("INVALID", None),
    ],
)
def test_slurm_durations(text: str, seconds: int | None) -> None:
    assert durations.slurm_seconds(text) == seconds


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30m", 1800),
        ("20s", 20),
        ("1h30m", 5400),
        ("90", 90),
        ("2h", 7200),
        ("", None),
        ("x", None),
    ],
)
def test_profile_durations(text: str, seconds: int | None) -> None:
    assert durations.human_seconds(text) == seconds


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("60", True),
        ("04:00:00", True),
        ("1-12", True),
        ("1-12:30", True),
        ("4h", False),
        ("", False),
    ],
)
def test_sbatch_time_format(text: str, ok: bool) -> None:
    assert durations.is_slurm_time(text) is ok
