"""The two ways onto a compute node, measured side by side: `srun` (a private sshd in the job,
over srun's stdio) and `node-ssh` (SSH from the login node into the node), on a real Slurm
cluster (tests/slurm_cluster.py; root only, as in the test suite).

For each mode: `colabtunnel up` of a cluster profile (time to URL), then a download through the
tunnel from Jupyter's own file handler (/files/...), the way a notebook's data would come back.
This is what `access = "auto"`'s order comes from (colabtunnel/launchers/slurm.py AUTO_ORDER).

    python -m benchmarks.slurm_access [--mb 50] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parent.parent


def _run(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "colabtunnel", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=int, default=50, help="size of the download (MB)")
    parser.add_argument("--repeat", type=int, default=3)
    options = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from tests.slurm_cluster import running_cluster
    from tests.sshd import passwd_home_environ

    results: dict[str, dict[str, list[float]]] = {}
    with running_cluster() as cluster, tempfile.TemporaryDirectory() as scratch:
        if cluster.python_env is None:
            print("no Python the cluster users can run: nothing to measure", file=sys.stderr)
            return 1
        root = Path(scratch)
        home, ct = root / "home", root / "ct"
        (home / ".ssh").mkdir(parents=True)
        ct.mkdir()
        (home / ".ssh" / "known_hosts").write_text(cluster.login.known_hosts_line())
        blob = cluster.user.home / "benchmark-blob"
        blob.write_bytes(os.urandom(options.mb * 1_000_000))
        shutil.chown(blob, cluster.user.name)
        profiles = ""
        for mode in ("srun", "node-ssh"):
            profiles += (
                f'[profiles.{mode}]\nhost = "{cluster.login.address}"\nport = {cluster.login.port}\n'
                f'user = "{cluster.user.name}"\nidentity_file = "{cluster.user.laptop_key}"\n'
                f'activate = "source {cluster.python_env}/bin/activate"\nlauncher = "slurm"\n'
                f'[profiles.{mode}.slurm]\naccess = "{mode}"\n\n'
            )
        (ct / "profiles.toml").write_text(profiles)
        env = {
            **os.environ,
            **passwd_home_environ(home, root),
            "HOME": str(home),
            "COLABTUNNEL_HOME": str(ct),
            "PYTHON_KEYRING_BACKEND": "keyring.backends.null.Keyring",
        }
        for _ in range(options.repeat):
            for mode in ("srun", "node-ssh"):
                started = time.monotonic()
                done = _run(env, "up", mode, "--json")
                if done.returncode != 0:
                    print(done.stderr, file=sys.stderr)
                    return 1
                up_s = time.monotonic() - started
                tunnel = json.loads(done.stdout)["tunnel"]
                token = tunnel["url"].split("token=")[1]
                started = time.monotonic()
                got = requests.get(
                    f"http://127.0.0.1:{tunnel['local_port']}/files/benchmark-blob",
                    params={"token": token},
                    timeout=600,
                )
                took = time.monotonic() - started
                assert got.ok and len(got.content) == options.mb * 1_000_000, got.status_code
                _run(env, "down", mode)
                mode_results = results.setdefault(mode, {"up_s": [], "mb_s": []})
                mode_results["up_s"].append(up_s)
                mode_results["mb_s"].append(options.mb / took)
        blob.unlink()
    print(f"{'access':<10} {'up to URL':>10} {'download':>12}   (median of {options.repeat})")
    for mode, values in results.items():
        up = statistics.median(values["up_s"])
        rate = statistics.median(values["mb_s"])
        print(f"{mode:<10} {up:>8.1f} s {rate:>8.1f} MB/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
