"""GPUs at a glance: what the host's GPU tools reported, as data, as JSON and as the lines people read.

The query runs on the host (colabtunnel/remote/gpu_query.py): inside the inspection `up` runs
anyway, and again, through the keeper's connection, when `status` asks for the GPUs' use now.
What comes back from the host is checked field by field here; anything malformed is dropped with a
note, never trusted.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from colabtunnel.ssh.connection import RunResult
    from colabtunnel.ssh.hosts import Host

HOST_CODE_PATH = Path(__file__).with_name("remote") / "gpu_query.py"
RESULT_MARKER = "__COLABTUNNEL_RESULT__"
REPORT_FLAG = "--gpu-report"
MIB_PER_GIB = 1024


def host_code() -> str:
    """The text of remote/gpu_query.py, as sent to the host."""
    from colabtunnel import remote

    return remote.text("gpu_query.py")


@dataclass(frozen=True)
class Gpu:
    index: int | None
    name: str
    memory_total_mib: int | None
    memory_used_mib: int | None
    utilization_pct: int | None
    driver: str | None

    def line(self) -> str:
        """`GPU 0  NVIDIA H100 80GB HBM3  79.6 GiB free of 80 GiB  0 % busy  driver 550.54`."""
        parts = [f"GPU {self.index if self.index is not None else '?'}", self.name]
        total, used = self.memory_total_mib, self.memory_used_mib
        if total is not None and used is not None:
            free = max(total - used, 0) / MIB_PER_GIB
            parts.append(f"{free:.1f} GiB free of {total / MIB_PER_GIB:.0f} GiB")
        elif total is not None:
            parts.append(f"{total / MIB_PER_GIB:.0f} GiB")
        if self.utilization_pct is not None:
            parts.append(f"{self.utilization_pct} % busy")
        if self.driver:
            parts.append(f"driver {self.driver}")
        return "  ".join(parts)


@dataclass(frozen=True)
class GpuReport:
    """What the GPU tools on one host said: the GPUs, the tools found (name → path on the host) and
    what went wrong (a tool that failed or did not answer in time)."""

    devices: tuple[Gpu, ...] = ()
    tools: Mapping[str, str] = field(default_factory=dict)
    problems: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, data: object) -> GpuReport:
        if not isinstance(data, dict):
            return cls(problems=("the GPU query sent no report",))
        problems = [p for p in _list(data.get("problems")) if isinstance(p, str)]
        devices = []
        for item in _list(data.get("devices")):
            gpu = _gpu(item)
            if gpu is None:
                problems.append("a GPU entry could not be read")
            else:
                devices.append(gpu)
        tools = {
            t["tool"]: t["path"]
            for t in _list(data.get("tools"))
            if isinstance(t, dict) and isinstance(t.get("tool"), str)
            if isinstance(t.get("path"), str)
        }
        return cls(tuple(devices), tools, tuple(problems))

    def to_json(self) -> dict[str, Any]:
        return {
            "tools": [{"tool": tool, "path": path} for tool, path in self.tools.items()],
            "devices": self.public(),
            "problems": list(self.problems),
        }

    def public(self) -> list[dict[str, Any]]:
        """The `gpus` list of `up --json` and `status --json`."""
        return [asdict(gpu) for gpu in self.devices]

    def lines(self, where: str) -> list[str]:
        """What `up` and `status` print: one line per GPU, or why there is none."""
        lines = [gpu.line() for gpu in self.devices]
        lines += [f"{problem} on {where}" for problem in self.problems]
        if not lines:
            if self.tools:
                lines.append(f"{' and '.join(self.tools)} lists no GPU on {where}")
            else:
                lines.append(f"no NVIDIA GPU found on {where} (CPU only)")
        return lines


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _optional_int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _gpu(item: object) -> Gpu | None:
    if not isinstance(item, dict) or not isinstance(item.get("name"), str):
        return None
    driver = item.get("driver")
    return Gpu(
        index=_optional_int(item.get("index")),
        name=item["name"],
        memory_total_mib=_optional_int(item.get("memory_total_mib")),
        memory_used_mib=_optional_int(item.get("memory_used_mib")),
        utilization_pct=_optional_int(item.get("utilization_pct")),
        driver=driver if isinstance(driver, str) else None,
    )


# -- the GPUs' use now, for `status` (run by the keeper on its own connection) ---------------------


def report_script(python: str, tools: Mapping[str, str], timeout: float) -> str:
    """The bash script that runs gpu_query.py alone with the tools the inspection found."""
    args = " ".join(shlex.quote(f"{tool}={path}") for tool, path in tools.items())
    return (
        f"exec {shlex.quote(python)} - {REPORT_FLAG} {timeout:g} {args} <<'CT_GPU_EOF'\n"
        f"{host_code()}\nCT_GPU_EOF\n"
    )


def use_now(
    host: Host, python: str, inventory: GpuReport, timeout: float, margin: float
) -> GpuReport:
    """Ask the host's GPU tools again, each for at most `timeout` s (the whole script: `margin`
    more). No tool at `up` time: nothing to ask, no round trip."""
    if not inventory.tools:
        return inventory
    if host.is_local:  # no shell in between: a laptop may have none (native Windows)
        done = _run_here(python, inventory.tools, timeout, timeout + margin)
    else:
        done = host.run_script(report_script(python, inventory.tools, timeout), timeout + margin)
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(RESULT_MARKER):
            try:
                return GpuReport.from_json(json.loads(line[len(RESULT_MARKER) :]))
            except ValueError:
                break
    said = (done.stderr or done.stdout).strip().splitlines()
    reason = said[-1] if said else f"exit {done.code}"
    return GpuReport(tools=inventory.tools, problems=(f"the GPU query failed: {reason}",))


def _run_here(python: str, tools: Mapping[str, str], timeout: float, limit: float) -> RunResult:
    """gpu_query.py run on this machine as `python - --gpu-report ...`, the file on stdin."""
    import subprocess

    from colabtunnel.ssh.connection import RunResult

    args = [REPORT_FLAG, f"{timeout:g}", *(f"{tool}={path}" for tool, path in tools.items())]
    try:
        done = subprocess.run(
            [python, "-", *args], input=host_code().encode(), capture_output=True, timeout=limit
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return RunResult(-1, "", f"{python}: {exc}")
    return RunResult(
        done.returncode, done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace")
    )
