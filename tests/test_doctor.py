"""`colabtunnel doctor` against the real sshd: each check, its order, and the fix it names."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import ACTIVATE, HOST_ALIAS, PROFILE, Env


def _doctor(env: Env, name: str = PROFILE) -> tuple[int, dict]:
    done = env.run("doctor", name, "--json")
    assert "Traceback" not in done.stderr
    data = json.loads(done.stdout)
    assert data["schema_version"] == 1 and data["command"] == "doctor"
    return done.returncode, {c["name"]: c for c in data["checks"]}


def test_doctor_all_pass_with_a_gpu_and_then_probes_the_live_tunnel(
    env: Env, tmp_path: Path
) -> None:
    bin_dir = tmp_path / "fake-gpu-bin"
    bin_dir.mkdir()
    fake = bin_dir / "nvidia-smi"
    # what `nvidia-smi --query-gpu=... --format=csv,noheader,nounits` prints
    fake.write_text("#!/bin/sh\necho '0, NVIDIA A100-SXM4-40GB, 40960, 4, 0, 550.54.15'\n")
    fake.chmod(0o755)
    env.write_profile(
        "withgpu", host=HOST_ALIAS, activate=f"{ACTIVATE}\nexport PATH={bin_dir}:$PATH"
    )
    code, checks = _doctor(env, "withgpu")
    assert code == 0, checks
    for name in (
        "ssh-config",
        "reachable",
        "host-key",
        "auth",
        "host",
        "jupyter",
        "ipykernel",
        "config",
        "gpus",
        "remote-port",
    ):
        assert checks[name]["status"] == "pass", checks[name]
    assert checks["gpus"]["detail"] == (
        "GPU 0  NVIDIA A100-SXM4-40GB  40.0 GiB free of 40 GiB  0 % busy  driver 550.54.15"
    )
    assert "Notebook 7" in checks["jupyter"]["detail"]
    assert checks["colab-probe"]["status"] == "skip"
    env.run("up", "withgpu", check=True)
    code, checks = _doctor(env, "withgpu")
    assert code == 0
    assert checks["probe:kernel-execute"]["status"] == "pass"
    assert checks["running"]["status"] == "pass"


def test_doctor_unknown_host_key_stops_before_auth(env: Env) -> None:
    env.known_hosts.write_text("")
    code, checks = _doctor(env)
    assert code == 1
    assert checks["reachable"]["status"] == "pass"
    assert checks["host-key"]["status"] == "fail"
    assert "colabtunnel trust gpu" in checks["host-key"]["fix"]
    assert "auth" not in checks and "jupyter" not in checks
    assert env.known_hosts.read_text() == ""  # doctor never trusts anything


def test_doctor_human_output_names_the_fix(env: Env) -> None:
    env.write_profile("nojupyter", host=HOST_ALIAS, jupyter="jupyter-missing-here")
    done = env.run("doctor", "nojupyter")
    assert done.returncode == 1
    assert "FAIL  host" in done.stdout and "fix: on the host" in done.stdout
    assert "ok    auth" in done.stdout
