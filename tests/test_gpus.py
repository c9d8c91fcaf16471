"""GPU at a glance, through the real sshd: `up` names the host's GPUs before the URL (human and
JSON), `status` asks the keeper for their use now (bounded, and not at all with --no-gpu), a host
without GPU tools says CPU only, and a GPU tool that hangs delays nothing beyond its timeout."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil

from colabtunnel.keeper import control as keeper_control
from tests import required_areas
from tests.conftest import ACTIVATE, HOST_ALIAS, PROFILE, Env, wait_for

HOST_CODE = Path(__file__).resolve().parent.parent / "colabtunnel" / "remote" / "gpu_query.py"
GPU_TIMEOUT_S = 5.0  # remote/gpu_query.py's GPU_TIMEOUT_S
TWO_H100 = (
    "0, NVIDIA H100 80GB HBM3, 81559, 0, 0, 550.54.15\n"
    "1, NVIDIA H100 80GB HBM3, 81559, 40960, 37, 550.54.15\n"
)
GPU_LINES = (
    "GPU 0  NVIDIA H100 80GB HBM3  79.6 GiB free of 80 GiB  0 % busy  driver 550.54.15",
    "GPU 1  NVIDIA H100 80GB HBM3  39.6 GiB free of 80 GiB  37 % busy  driver 550.54.15",
)
URL_RE = re.compile(r"^http://localhost:\d+/\?token=\S+$")


class FakeSmi:
    """An `nvidia-smi` on the host's PATH that prints `output`, counts its runs in `runs`, and
    while the file `hang` exists hangs instead, in a child process (whose PID goes to `hung`)."""

    def __init__(self, directory: Path, output: str = TWO_H100) -> None:
        self.dir = directory
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "output").write_text(output)
        script = directory / "nvidia-smi"
        script.write_text(
            "#!/bin/sh\n"
            'here=$(dirname "$0")\n'
            'echo run >> "$here/runs"\n'
            # a child that holds the output pipe, as a wedged driver call would
            'if [ -e "$here/hang" ]; then sleep 600 & echo $! >> "$here/hung"; wait; fi\n'
            'cat "$here/output"\n'
        )
        script.chmod(0o755)

    @property
    def runs(self) -> int:
        path = self.dir / "runs"
        return len(path.read_text().splitlines()) if path.exists() else 0

    def hang(self) -> None:
        (self.dir / "hang").touch()

    def hung_pids(self) -> list[int]:
        path = self.dir / "hung"
        return [int(p) for p in path.read_text().split()] if path.exists() else []


def _gpu_profile(env: Env, name: str, smi: FakeSmi) -> None:
    env.write_profile(
        name, host=HOST_ALIAS, activate=f"{ACTIVATE}\nexport PATH={smi.dir}:$PATH", workdir="~"
    )


def _up_merged(env: Env, name: str) -> tuple[list[str], list[tuple[float, str]]]:
    """`up NAME` with stderr and stdout in one stream, as a terminal shows them, each line with
    the time it arrived."""
    start = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "colabtunnel", "up", name],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    timed = [(time.monotonic() - start, line.rstrip("\n")) for line in proc.stdout]
    assert proc.wait(120) == 0, "\n".join(line for _, line in timed)
    return [line for _, line in timed], timed


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_up_names_both_gpus_before_the_url_and_status_shows_their_use(
    env: Env, tmp_path: Path
) -> None:
    smi = FakeSmi(tmp_path / "gpu-bin")
    _gpu_profile(env, "h100", smi)
    lines, _ = _up_merged(env, "h100")
    url_at = next(i for i, line in enumerate(lines) if URL_RE.match(line))
    for gpu_line in GPU_LINES:
        at = next(i for i, line in enumerate(lines) if line.strip() == gpu_line)
        assert at < url_at, lines
    assert smi.runs == 1  # inside the inspection `up` makes anyway

    document = json.loads(env.run("up", "h100", "--json", check=True).stdout)
    assert [g["name"] for g in document["gpus"]] == ["NVIDIA H100 80GB HBM3"] * 2
    assert document["gpus"][1] == {
        "index": 1,
        "name": "NVIDIA H100 80GB HBM3",
        "memory_total_mib": 81559,
        "memory_used_mib": 40960,
        "utilization_pct": 37,
        "driver": "550.54.15",
    }

    status = env.run("status", "h100", check=True)
    assert smi.runs == 2  # one nvidia-smi, through the keeper's connection
    for gpu_line in GPU_LINES:
        assert gpu_line in status.stdout, status.stdout
    use = json.loads(env.run("status", "h100", "--json", check=True).stdout)
    assert len(use["tunnels"][0]["gpu_use"]["gpus"]) == 2
    assert smi.runs == 3

    quiet = env.run("status", "h100", "--no-gpu", check=True)
    assert "GPU" not in quiet.stdout and "h100" in quiet.stdout
    no_gpu_json = json.loads(env.run("status", "--no-gpu", "--json", check=True).stdout)
    assert no_gpu_json["tunnels"][0]["gpu_use"] is None
    assert smi.runs == 3  # --no-gpu: nothing ran on the host


def test_status_never_hangs_on_a_hung_gpu_tool(env: Env, tmp_path: Path) -> None:
    smi = FakeSmi(tmp_path / "gpu-bin")
    _gpu_profile(env, "h100", smi)
    env.run("up", "h100", check=True)
    smi.hang()
    start = time.monotonic()
    done = env.run("status", "h100", check=True)
    took = time.monotonic() - start
    assert took < keeper_control.ASK_TIMEOUT_S + 2, took
    assert f"nvidia-smi did not answer within {keeper_control.GPU_QUERY_S:g} s" in done.stdout
    assert "http://localhost:" in done.stdout
    assert smi.hung_pids()
    wait_for(lambda: all(_gone(pid) for pid in smi.hung_pids()), timeout=10)
    os.unlink(smi.dir / "hang")
    assert GPU_LINES[0] in env.run("status", "h100", check=True).stdout  # the keeper still answers


def test_host_without_gpu_tools_says_cpu_only(env: Env) -> None:
    if shutil.which("nvidia-smi") or shutil.which("rocm-smi"):
        required_areas.skip("machine", "it has GPU tools: its host cannot be CPU-only")
    lines, _ = _up_merged(env, PROFILE)
    assert "  no NVIDIA GPU found on root@127.0.0.1:" in "\n".join(lines)
    assert any("(CPU only)" in line for line in lines)
    document = json.loads(env.run("up", PROFILE, "--json", check=True).stdout)
    assert document["gpus"] == []
    assert "(CPU only)" in env.run("status", check=True).stdout


def test_a_hanging_nvidia_smi_does_not_delay_up_beyond_its_timeout(
    env: Env, tmp_path: Path
) -> None:
    smi = FakeSmi(tmp_path / "gpu-bin")
    smi.hang()
    _gpu_profile(env, "stuck", smi)
    lines, timed = _up_merged(env, "stuck")
    inspecting = next(t for t, line in timed if line.startswith("· inspecting"))
    starting = next(t for t, line in timed if line.startswith("· starting"))
    # The tool really hung (so the timeout was what ended it), and nothing waited longer.
    assert GPU_TIMEOUT_S - 0.5 <= starting - inspecting < GPU_TIMEOUT_S + 5, timed
    assert any(f"nvidia-smi did not answer within {GPU_TIMEOUT_S:g} s" in line for line in lines)
    assert any(URL_RE.match(line) for line in lines)
    assert smi.hung_pids()
    assert all(_gone(pid) for pid in smi.hung_pids())  # killed, with its process group


# -- the host code alone: what the GPU tools print, parsed ----------------------------------------


def _report(tmp_path: Path, tools: dict[str, str], timeout: float = 5) -> dict:
    """Run remote/gpu_query.py as `status` runs it, with fake tools that print the given text."""
    args = []
    for tool, text in tools.items():
        fake = tmp_path / tool
        (tmp_path / f"{tool}.out").write_text(text)
        fake.write_text(f'#!/bin/sh\ncat "{tmp_path / f"{tool}.out"}"\n')
        fake.chmod(0o755)
        args.append(f"{tool}={fake}")
    done = subprocess.run(
        [sys.executable, "-", "--gpu-report", str(timeout), *args],
        input=HOST_CODE.read_text(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    marker = "__COLABTUNNEL_RESULT__ "
    line = next(x for x in done.stdout.splitlines() if x.startswith(marker))
    return json.loads(line[len(marker) :])


def test_nvidia_smi_fields_that_are_not_numbers(tmp_path: Path) -> None:
    report = _report(
        tmp_path,
        {"nvidia-smi": "0, Tesla T4, 15360, [N/A], [Not Supported], 535.1\n2, A, B, 1, 2, 3, 4\n"},
    )
    assert report["devices"] == [
        {
            "index": 0,
            "name": "Tesla T4",
            "memory_total_mib": 15360,
            "memory_used_mib": None,
            "utilization_pct": None,
            "driver": "535.1",
        },
        {  # a comma in the name keeps the name whole
            "index": 2,
            "name": "A, B",
            "memory_total_mib": 1,
            "memory_used_mib": 2,
            "utilization_pct": 3,
            "driver": "4",
        },
    ]


def test_rocm_smi_json(tmp_path: Path) -> None:
    rocm = {
        "card1": {
            "Card series": "AMD Instinct MI300X",
            "VRAM Total Memory (B)": "206141652992",
            "VRAM Total Used Memory (B)": "290521088",
            "GPU use (%)": "12",
        },
        "card0": {"Card Series": "AMD Instinct MI250X", "VRAM Total Memory (B)": "68702699520"},
        "system": {"Driver version": "6.7.0"},
    }
    report = _report(tmp_path, {"rocm-smi": "WARNING: noise\n" + json.dumps(rocm)})
    assert [(d["index"], d["name"]) for d in report["devices"]] == [
        (0, "AMD Instinct MI250X"),
        (1, "AMD Instinct MI300X"),
    ]
    assert report["devices"][1]["memory_total_mib"] == 196592
    assert report["devices"][1]["memory_used_mib"] == 277
    assert report["devices"][1]["utilization_pct"] == 12
    assert report["devices"][0]["driver"] == "6.7.0"
    assert report["devices"][0]["utilization_pct"] is None


def test_a_failing_tool_is_a_problem_not_a_gpu(tmp_path: Path) -> None:
    fake = tmp_path / "nvidia-smi"
    fake.write_text(
        "#!/bin/sh\necho 'NVIDIA-SMI has failed because it could not communicate with the "
        "NVIDIA driver.' >&2\nexit 9\n"
    )
    fake.chmod(0o755)
    done = subprocess.run(
        [sys.executable, "-", "--gpu-report", "5", f"nvidia-smi={fake}"],
        input=HOST_CODE.read_text(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    report = json.loads(done.stdout.split("__COLABTUNNEL_RESULT__ ", 1)[1])
    assert report["devices"] == []
    assert report["problems"] == [
        "nvidia-smi failed (exit 9): NVIDIA-SMI has failed because it could not communicate "
        "with the NVIDIA driver."
    ]


LATE_COLLECT = """
import json, sys, time
sys.argv = ["host"]  # the inspection's way in, not --gpu-report
host = {"__name__": "gpu_query"}
exec(sys.stdin.read(), host)
query = host["Query"]({"nvidia-smi": FAKE}, 0.5)
time.sleep(2)  # Jupyter starting inside the Slurm job, past the query's bound
print(json.dumps(query.collect()))
"""


def test_an_answer_collected_after_the_deadline_is_kept(tmp_path: Path) -> None:
    """The Slurm job collects the query once Jupyter has started, which can take longer than the
    query's bound: a tool that answered at once is not reported as one that did not answer."""
    smi = FakeSmi(tmp_path / "smi")
    done = subprocess.run(
        [sys.executable, "-c", LATE_COLLECT.replace("FAKE", repr(str(smi.dir / "nvidia-smi")))],
        input=HOST_CODE.read_text(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["problems"] == []
    assert [d["name"] for d in report["devices"]] == ["NVIDIA H100 80GB HBM3"] * 2


def test_the_host_code_is_python_3_7_and_has_no_placeholder_lookalikes() -> None:
    import ast

    text = HOST_CODE.read_text()
    ast.parse(text, feature_version=(3, 7))
    assert "__CT_" not in text  # remote.render would take it for a placeholder
