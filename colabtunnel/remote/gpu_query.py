"""The host's GPUs and how busy they are, from nvidia-smi (or rocm-smi for AMD), on the host.

This file runs on the host, on the Python that runs Jupyter there, which may be as old as 3.7:
typing's List/Dict instead of list[...] (pyproject.toml lints it as 3.7 code); no
`from __future__` (the inspection script includes this text in its middle); no f-strings (the
script renderer would take a name in braces for one of its placeholders).

Two ways in:
- Inside the inspection script (remote_scripts.INSPECT): defining this text starts the tools at
  once, so they run while the rest of the inspection does; `gpus()` collects their answer, never
  waiting more than GPU_TIMEOUT_S from the start. No extra round trip.
- Alone, for `status`: `python - --gpu-report SECONDS [TOOL=PATH ...]` prints one result line;
  the tool paths are the ones the inspection found (after the profile's `activate`).

A tool that hangs is killed with its whole process group, so nothing is left running on the host.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional

GPU_TIMEOUT_S = 5.0
READ_GRACE_S = 1.0  # for a tool that has exited; a child of it may hold its pipes a little
REPORT_FLAG = "--gpu-report"
RESULT_MARKER = "__COLABTUNNEL_RESULT__"
NVIDIA_ARGS = [
    "--query-gpu=index,name,memory.total,memory.used,utilization.gpu,driver_version",
    "--format=csv,noheader,nounits",
]
ROCM_ARGS = [
    "--showproductname",
    "--showmeminfo",
    "vram",
    "--showuse",
    "--showdriverversion",
    "--json",
]
TOOL_ARGS = {"nvidia-smi": NVIDIA_ARGS, "rocm-smi": ROCM_ARGS}


def find_tools() -> Dict[str, str]:
    """The GPU tools on PATH, by name: the absolute path of each."""
    found = {}
    for tool in TOOL_ARGS:
        path = shutil.which(tool)
        if path:
            found[tool] = os.path.abspath(path)
    return found


class Query:
    """The tools, started together; `collect()` waits for them until one shared deadline."""

    def __init__(self, tools: Dict[str, str], timeout: float) -> None:
        self.tools = tools
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout
        self.running: Dict[str, subprocess.Popen[bytes]] = {}
        self.problems: List[str] = []
        for tool, path in tools.items():
            try:
                self.running[tool] = subprocess.Popen(
                    [path] + TOOL_ARGS[tool],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    start_new_session=True,  # its own group: a hung tool goes with its children
                )
            except OSError as exc:
                self.problems.append(tool + " could not run: " + str(exc.strerror or exc))

    def collect(self) -> Dict[str, Any]:
        devices: List[Dict[str, Any]] = []
        for tool, proc in self.running.items():
            output = self._wait(tool, proc)
            if output is not None:
                devices.extend(PARSERS[tool](output))
        return {
            "tools": [{"tool": tool, "path": path} for tool, path in self.tools.items()],
            "devices": devices,
            "problems": self.problems,
        }

    def _wait(self, tool: str, proc: "subprocess.Popen[bytes]") -> Optional[str]:
        timeout = max(0.0, self.deadline - time.monotonic())
        if proc.poll() is not None:
            # It has answered: only its pipes are left to read. The Slurm job collects after
            # Jupyter has started, often past the deadline; a zero timeout lost the answer then.
            timeout = max(timeout, READ_GRACE_S)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            self.problems.append(tool + " did not answer within " + _seconds(self.timeout))
            return None
        if proc.returncode != 0:
            said = (err or out).decode(errors="replace").strip().splitlines()
            reason = said[0] if said else "no output"
            self.problems.append(tool + " failed (exit " + str(proc.returncode) + "): " + reason)
            return None
        return out.decode(errors="replace")


def _seconds(value: float) -> str:
    return str(int(value)) + " s" if value == int(value) else str(value) + " s"


def _kill_group(proc: "subprocess.Popen[bytes]") -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        proc.kill()
    proc.wait()
    for pipe in (proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()


def _number(text: Any) -> Optional[float]:
    try:
        return float(str(text).strip())
    except ValueError:
        return None  # "[N/A]", "[Not Supported]", ""


def _whole(value: Optional[float]) -> Optional[int]:
    return None if value is None else round(value)


def parse_nvidia(output: str) -> List[Dict[str, Any]]:
    """index, name, memory.total, memory.used, utilization.gpu, driver_version: one GPU a line."""
    devices = []
    for line in output.splitlines():
        raw = line.split(",")
        fields = [f.strip() for f in raw]
        if len(fields) < 6 or _number(fields[0]) is None:
            continue
        name = ",".join(raw[1:-4]).strip()  # a name with a comma in it stays whole
        total, used, busy, driver = fields[-4:]
        devices.append(
            {
                "index": _whole(_number(fields[0])),
                "name": name,
                "memory_total_mib": _whole(_number(total)),
                "memory_used_mib": _whole(_number(used)),
                "utilization_pct": _whole(_number(busy)),
                "driver": driver if driver and not driver.startswith("[") else None,
            }
        )
    return devices


def _field(values: Dict[str, Any], *names: str) -> Any:
    """rocm-smi's key spelling changes between releases ("Card series", "Card Series")."""
    lowered = {str(k).lower(): v for k, v in values.items()}
    for name in names:
        if name.lower() in lowered:
            return lowered[name.lower()]
    return None


def parse_rocm(output: str) -> List[Dict[str, Any]]:
    """rocm-smi --json: {"card0": {...}, ..., "system": {"Driver version": ...}}."""
    try:
        data = json.loads(output[output.find("{") :])
    except ValueError:
        return []
    if not isinstance(data, dict):
        return []
    system = data.get("system") if isinstance(data.get("system"), dict) else {}
    driver = _field(system, "Driver version") if system else None
    devices = []
    for key in sorted(data, key=lambda k: (len(k), k)):
        card = data[key]
        if not (key.startswith("card") and key[4:].isdigit() and isinstance(card, dict)):
            continue
        total = _number(_field(card, "VRAM Total Memory (B)"))
        used = _number(_field(card, "VRAM Total Used Memory (B)"))
        devices.append(
            {
                "index": int(key[4:]),
                "name": _field(card, "Card Series", "Card series", "Device Name", "Card model")
                or "AMD GPU",
                "memory_total_mib": _whole(None if total is None else total / 1048576),
                "memory_used_mib": _whole(None if used is None else used / 1048576),
                "utilization_pct": _whole(_number(_field(card, "GPU use (%)"))),
                "driver": str(driver) if driver else None,
            }
        )
    return devices


PARSERS = {"nvidia-smi": parse_nvidia, "rocm-smi": parse_rocm}


def gpus() -> Dict[str, Any]:
    """The inspection's `gpus` key: the query started when this text was defined, collected."""
    return _STARTED.collect()


def _given_tools(args: List[str]) -> Dict[str, str]:
    """TOOL=PATH arguments, for the tools this file knows."""
    pairs = (arg.partition("=") for arg in args)
    return {tool: path for tool, _, path in pairs if tool in TOOL_ARGS and path}


if sys.argv[1:2] == [REPORT_FLAG]:
    report = Query(_given_tools(sys.argv[3:]), float(sys.argv[2])).collect()
    print("\n" + RESULT_MARKER + " " + json.dumps(report))
    sys.exit(0)
_STARTED = Query(find_tools(), GPU_TIMEOUT_S)
