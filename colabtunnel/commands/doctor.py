"""`colabtunnel doctor PROFILE`: every pre-flight check, each with pass/fail and the fix.

Starts nothing. Each step runs only when the steps it needs passed, so the first failure is the
one to fix; when the tunnel is up, the Colab probe runs through it too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from colabtunnel import launchers
from colabtunnel.errors import ColabtunnelError
from colabtunnel.findings import FAIL, PASS, SKIP, WARN, Finding
from colabtunnel.jupyter import hostconfig, inspection
from colabtunnel.jupyter.flavours import Flavour, choose
from colabtunnel.jupyter.gpus import GpuReport
from colabtunnel.keeper import state
from colabtunnel.keeper.tunnel import local_jupyter
from colabtunnel.output import Prompter
from colabtunnel.profiles import Profile, get_profile
from colabtunnel.ssh.credentials import Credentials
from colabtunnel.ssh.hosts import Host, LocalHost, SSHHost


@dataclass
class DoctorReport:
    profile: str
    findings: list[Finding]

    @property
    def ok(self) -> bool:
        return all(f.status != FAIL for f in self.findings)

    def to_dict(self) -> dict[str, Any]:
        return {
            "profile": self.profile,
            "ok": self.ok,
            "checks": [asdict(f) for f in self.findings],
        }


class _Stop(Exception):
    """A failed step that later steps depend on."""


def doctor(name: str, prompter: Prompter | None = None) -> DoctorReport:
    profile = get_profile(name)
    report = DoctorReport(name, [])
    add = report.findings.append
    host: Host | None = None
    connection = None
    try:
        if profile.is_local:
            profile = local_jupyter(profile)
            host = LocalHost()
        else:
            connection = _ssh_checks(profile, add, prompter)
            host = SSHHost(connection, profile.host)
        _host_checks(host, profile, add)
    except _Stop:
        pass
    finally:
        if connection is not None:
            connection.close()
    _probe_checks(name, add)
    return report


def _step(add: Callable[[Finding], None], name: str, run: Callable[[], str]) -> None:
    """Run one check; a ColabtunnelError becomes a failed finding and stops dependent steps."""
    try:
        add(Finding(name, PASS, run()))
    except ColabtunnelError as exc:
        add(Finding(name, FAIL, exc.message, exc.hint))
        raise _Stop from exc


def _ssh_checks(profile: Profile, add: Callable[[Finding], None], prompter: Prompter | None) -> Any:
    """reachable → host-key → auth, across every jump host; the failing step is named."""
    from colabtunnel.ssh import connection, hostkeys, sshtarget
    from colabtunnel.ssh.auth import LoginFailed

    try:
        target = sshtarget.resolve(profile)
        hops = sshtarget.route(target)
    except ColabtunnelError as exc:
        add(Finding("ssh-config", FAIL, exc.message, exc.hint))
        raise _Stop from exc
    add(
        Finding(
            "ssh-config",
            PASS,
            f"{target.label} (resolved by {target.resolver}); route: {sshtarget.describe(hops)}",
        )
    )
    seen: list[str] = []

    def verify(transport: Any, hop: Any, is_target: bool) -> None:
        seen.append(f"{hop.hostname}:{hop.port}")
        connection.check_host_key(transport, hop, profile.name, accept_new=False)
        key = transport.get_remote_server_key()
        fingerprints.append(f"{hop.hostname}: {key.get_name()} {hostkeys.fingerprint(key)}")

    fingerprints: list[str] = []
    creds = Credentials(profile.name, prompter=prompter)
    try:
        transports = connection.walk(
            target, profile.name, verify, creds, login_target=True, hops=hops
        )
    except connection.Unreachable as exc:
        add(Finding("reachable", FAIL, exc.message, exc.hint))
        raise _Stop from exc
    except LoginFailed as exc:
        add(Finding("reachable", PASS, "SSH answers: " + ", ".join(seen)))
        add(Finding("host-key", PASS, "; ".join(fingerprints) + " (in known_hosts)"))
        add(Finding("auth", FAIL, exc.message, exc.hint))
        raise _Stop from exc
    except ColabtunnelError as exc:  # the host-key check refused
        add(Finding("reachable", PASS, "SSH answers: " + ", ".join(seen)))
        add(Finding("host-key", FAIL, exc.message, exc.hint))
        raise _Stop from exc
    add(Finding("reachable", PASS, "SSH answers: " + ", ".join(seen)))
    add(Finding("host-key", PASS, "; ".join(fingerprints) + " (in known_hosts)"))
    add(Finding("auth", PASS, f"logged in as {target.user}"))
    return connection.Connection(transports[-1], target, transports[:-1])


def _host_checks(host: Host, profile: Profile, add: Callable[[Finding], None]) -> None:
    info: inspection.HostInfo | None = None

    def inspect() -> str:
        nonlocal info
        info = launchers.for_profile(profile).inspect(host, profile, want_port=profile.remote_port)
        return f"activate and workdir fine; Python {info.python} runs {profile.jupyter}"

    _step(add, "host", inspect)
    assert info is not None
    versions = ", ".join(f"{k} {v}" for k, v in sorted(info.versions.items()) if v)
    flavour: Flavour | None = None
    try:
        flavour = choose(profile.app, info.versions, inspection.install_hint(profile))
        add(Finding("jupyter", PASS, f"{flavour.label} (--{flavour.prefix}.* flags); {versions}"))
    except ColabtunnelError as exc:
        add(Finding("jupyter", FAIL, exc.message, exc.hint))
    kernel = info.versions.get("ipykernel")
    add(
        Finding("ipykernel", PASS, f"ipykernel {kernel}")
        if kernel
        else Finding("ipykernel", FAIL, "ipykernel is not installed", "pip install ipykernel")
    )
    for finding in _config_findings(info, flavour, host.name):
        add(finding)
    add(_gpu_finding(info.gpus, host.name))
    for finding in launchers.for_profile(profile).check(host, profile, info):
        add(finding)


def _config_findings(
    info: inspection.HostInfo, flavour: Flavour | None, where: str
) -> list[Finding]:
    """The host's Jupyter config: refused (an emptied token), overridden (a warning each, in the
    words `up` prints), or nothing to say."""
    found = []
    refused = hostconfig.token_error(info.config, flavour, f"on {where}")
    if refused is not None:
        found.append(Finding("config", FAIL, refused.message, refused.hint))
    found += [Finding("config", WARN, note) for note in inspection.config_notes(info, flavour)]
    if not found:
        dirs = ", ".join(info.config_dirs)
        found.append(Finding("config", PASS, f"nothing in {dirs} that colabtunnel must override"))
    return found


def _gpu_finding(gpus: GpuReport, where: str) -> Finding:
    detail = "; ".join(gpus.lines(where))
    if gpus.devices:
        return Finding("gpus", PASS, detail)
    if gpus.tools:
        return Finding("gpus", WARN, detail, "check the driver: run nvidia-smi (or rocm-smi) there")
    return Finding(
        "gpus", WARN, detail, "fine for CPU work; otherwise install the GPU driver on the host"
    )


def _probe_checks(name: str, add: Callable[[Finding], None]) -> None:
    record = state.live(name)
    if record is None:
        add(Finding("colab-probe", SKIP, "the tunnel is not up; `up` runs the Colab check itself"))
        return
    from colabtunnel.jupyter import probe

    report = probe.run_probe(f"http://127.0.0.1:{record.local_port}/", record.token)
    for check in report.checks:
        add(Finding(f"probe:{check.name}", PASS if check.ok else FAIL, check.detail, check.fix))
