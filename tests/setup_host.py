"""Install the system packages the test suite needs (OpenSSH, Chromium, tmux, Slurm ...), when missing.

Run by the README's test command before pytest. As root it uses apt-get; otherwise it says exactly
what to install and exits 1, so a developer never gets a suite that silently skips SSH or the
browser test.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

PACKAGES = {
    "openssh-server": Path("/usr/sbin/sshd"),
    "openssh-client": Path("/usr/bin/ssh-keygen"),
    "chromium": Path("/usr/bin/chromium"),
    "iproute2": Path("/bin/ip"),
    "passwd": Path("/usr/sbin/useradd"),
    "libnss-wrapper": Path(
        "/usr/lib", sysconfig.get_config_var("MULTIARCH") or "", "libnss_wrapper.so"
    ),
    "tmux": Path("/usr/bin/tmux"),
    "shellcheck": Path("/usr/bin/shellcheck"),
    "util-linux": Path("/usr/bin/nsenter"),
    "munge": Path("/usr/sbin/munged"),
    "slurmctld": Path("/usr/sbin/slurmctld"),
    "slurmd": Path("/usr/sbin/slurmd"),
    "slurm-client": Path("/usr/bin/sbatch"),
    "python3-venv": Path("/usr/share/doc/python3-venv"),
    "podman": Path("/usr/bin/podman"),
    "runc": Path("/usr/sbin/runc"),
    "catatonit": Path("/usr/bin/catatonit"),
    "uidmap": Path("/usr/bin/newuidmap"),
    "slirp4netns": Path("/usr/bin/slirp4netns"),
    "debootstrap": Path("/usr/sbin/debootstrap"),
    "docker-registry": Path("/usr/bin/docker-registry"),
    "docker.io": Path("/usr/sbin/dockerd"),
    "libpam-google-authenticator": Path(
        "/usr/lib",
        sysconfig.get_config_var("MULTIARCH") or "",
        "security",
        "pam_google_authenticator.so",
    ),  # its files are per minor version
}
# Why each package is needed, for the message a non-root developer gets.
PURPOSE = {
    "openssh-server": "a real sshd plays the GPU host",
    "openssh-client": "a real sshd plays the GPU host",
    "chromium": "headless Chromium plays Colab's page in tests/test_browser.py",
    "iproute2": "network namespaces put ProxyJump targets out of direct reach (tests/auth_servers.py)",
    "passwd": "a password-only sshd logs in a user the tests create (tests/auth_servers.py)",
    "libnss-wrapper": "gives each test its own home in the password database, where ssh reads ~",
    "tmux": "a real terminal types into the interactive commands (tests/test_terminal.py)",
    "shellcheck": "lints the bash colabtunnel sends to hosts (tests/test_lint.py)",
    "util-linux": "nsenter runs the Slurm compute node's slurmd in its own network namespace",
    "munge": "munged authenticates the test Slurm cluster's daemons and commands",
    "slurmctld": "the test Slurm cluster's controller (tests/slurm_cluster.py)",
    "slurmd": "the test Slurm cluster's compute node, in a network namespace of its own",
    "slurm-client": "sbatch/squeue/scancel/srun, run by the test user on the login node",
    "libpam-google-authenticator": "OpenSSH's sshd asks a real one-time code (tests/otp_sshd.py)",
    "python3-venv": "the Slurm cluster's users run Jupyter from a venv of Debian's python3",
    "podman": "rootless Podman plays a GPU host set up for containers (tests/container_host.py)",
    "runc": "Podman's OCI runtime here (crun fails on this kernel's hybrid cgroups)",
    "catatonit": "the init process of `podman run --init`",
    "uidmap": "newuidmap/newgidmap give rootless Podman its user namespace",
    "slirp4netns": "rootless Podman's network, through which a port is published",
    "debootstrap": "builds the test image's Debian root filesystem (no registry is reachable)",
    "docker-registry": "a local registry to pull the test image from (tests/container_host.py)",
    "docker.io": "Docker's engine, as the other engine a profile may name (tests/container_host.py)",
}


def missing() -> list[str]:
    return [pkg for pkg, path in PACKAGES.items() if not path.exists()]


def main() -> int:
    needed = missing()
    if not needed:
        return 0
    if os.name != "posix" or os.geteuid() != 0 or not shutil.which("apt-get"):
        print(
            f"the tests need {', '.join(needed)} "
            f"({'; '.join(sorted({PURPOSE[pkg] for pkg in needed}))}).\n"
            f"install it, e.g.: sudo apt-get install -y {' '.join(needed)}",
            file=sys.stderr,
        )
        return 1
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", *needed], check=True, env=env)
    return 0 if not missing() else 1


if __name__ == "__main__":
    sys.exit(main())
