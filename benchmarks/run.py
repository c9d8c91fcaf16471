"""Benchmark: direct TCP vs `ssh -L` vs colabtunnel's forwarder, on loopback and on an emulated long
link, plus `colabtunnel up` start-up and the forwarder's memory. See benchmarks/README.md.

    python -m benchmarks.run [--quick] [--repeat N] [--json FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import harness, roundtrips, startup
from benchmarks.harness import Child, Children, World

SCHEMA = 1
PATHS = ("direct", "ssh", "colabtunnel")
PATH_LABELS = {"direct": "direct", "ssh": "ssh -L", "colabtunnel": "colabtunnel"}
# Where transfers are measured, and what on each: the 50 ms link ("link"), the 100 ms one ("far")
# and the 50 ms link to a jump host that reaches the sshd on loopback ("jump": ssh -J + -L).
LINKS = ("loopback", "link", "far", "jump")
WORKLOADS = {
    "loopback": ("download", "upload", "rtt"),
    "link": ("download", "upload", "rtt"),
    "far": ("download",),
    "jump": ("download", "upload", "rtt"),
}
# `up` on loopback, and at the far link's RTT directly and through the jump host.
UP_ROUTES = {"far": "far link", "jump-far": "far link through a jump host"}
STEPS = ("launch", "connect", "detect", "start", "ready", "confirm", "probe")
# Round trips `up` may spend beyond loopback (issue 14); --quick fails at 1.5 times these.
ROUND_TRIP_TARGETS = {"far": 10, "jump-far": 14}
QUICK_MARGIN = 1.5
MB = 1_000_000
PARTS = frozenset({"transfer", "memory", "startup"})


@dataclass
class Config:
    quick: bool
    repeat: int
    download: int  # bytes
    upload: int
    rtts: int  # round trips on loopback
    link_rtts: int  # round trips on the long link
    delay: float  # seconds each way on the long link
    far_delay: float  # seconds each way on the far link (transfers and `up`)
    rss_bytes: int
    startup_repeat: int
    cli_repeat: int
    variants: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    parts: frozenset[str] = PARTS
    links: tuple[str, ...] = LINKS

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Config:
        quick = args.quick
        repeat = args.repeat or (1 if quick else 3)
        cfg = cls(
            quick=quick,
            repeat=repeat,
            download=int((args.download_mb or (5 if quick else 200)) * MB),
            upload=int((args.upload_mb or (5 if quick else 50)) * MB),
            rtts=args.rtts or (200 if quick else 2000),
            link_rtts=args.link_rtts or (50 if quick else 200),
            delay=(args.delay_ms if args.delay_ms is not None else (2 if quick else 25)) / 1000,
            far_delay=(args.far_rtt_ms or 100) / 2000,
            rss_bytes=int((args.rss_mb or (20 if quick else 1000)) * MB),
            startup_repeat=repeat,
            cli_repeat=max(3, repeat),
            parts=frozenset(args.only or PARTS) - ({"startup"} if args.no_startup else set()),
            links=tuple(args.links.split(",")) if args.links else LINKS,
        )
        if unknown := set(cfg.links) - set(LINKS):
            raise SystemExit(f"--links: unknown {sorted(unknown)}; known: {', '.join(LINKS)}")
        for window in args.windows.split(",") if args.windows else []:
            cfg.variants.append((f"w={window}", {"BENCH_WINDOW": window}))
        for spec in args.variant or []:
            label, _, assignments = spec.partition(":")
            env = dict(item.split("=", 1) for item in assignments.split(",") if item)
            cfg.variants.append((label, env))
        return cfg


# -- results -------------------------------------------------------------------------------------


class Results:
    def __init__(self) -> None:
        self.metrics: dict[str, dict[str, Any]] = {}
        self.variants: dict[str, dict[str, Any]] = {}
        self.info: dict[str, Any] = {}

    def declare(
        self, key: str, label: str, unit: str, better: str, paths: tuple[str, ...], section: str
    ) -> None:
        self.metrics.setdefault(
            key,
            {
                "label": label,
                "unit": unit,
                "better": better,
                "section": section,
                "paths": list(paths),
                "runs": {p: [] for p in paths},
            },
        )

    def add(self, key: str, path: str, value: float) -> None:
        self.metrics[key]["runs"][path].append(value)

    def finish(self) -> None:
        for metric in self.metrics.values():
            metric["median"] = {
                p: (statistics.median(v) if v else None) for p, v in metric["runs"].items()
            }
            med = metric["median"]
            ratio = None
            if med.get("ssh") and med.get("colabtunnel") is not None:
                ratio = med["colabtunnel"] / med["ssh"]
            metric["ratio_colabtunnel_to_ssh"] = ratio


# -- the run -------------------------------------------------------------------------------------


class Bench:
    def __init__(self, cfg: Config, log: Callable[[str], None]) -> None:
        self.cfg = cfg
        self.log = log
        self.results = Results()

    @contextlib.contextmanager
    def setup(self) -> Iterator[None]:
        # Measure colabtunnel as installed: pip compiles its bytecode at install time, while an
        # editable checkout run with PYTHONDONTWRITEBYTECODE would compile every module on every
        # start (~0.04 s of `up`).
        subprocess.run(
            [sys.executable, "-m", "compileall", "-q", str(harness.REPO / "colabtunnel")],
            check=True,
        )
        self.root = Path(tempfile.mkdtemp(prefix="ctbench-"))
        (self.root / "logs").mkdir()
        self.children = Children(self.root / "logs")
        self.world: World | None = None
        try:
            self.sshd = harness.start_sshd(self.children, self.root / "sshd")
            self.jump = harness.start_sshd(
                self.children, self.root / "jump", "jump-sshd", client_key=self.sshd.client_key
            )
            self.server = self.children.python("server", "benchmarks.server")
            self.server_port = int(self.server.info["port"])
            cfg = self.cfg
            self.traces = {"far": self.root / "far.trace", "jump-far": self.root / "jump-far.trace"}
            # What each link's client dials: sshd itself or a delay proxy in front of it.
            self.proxies = {
                "link": self.delay_proxy("link-sshd", self.sshd.port, cfg.delay),
                "far": self.delay_proxy("far-sshd", self.sshd.port, cfg.far_delay, "far"),
                "jump": self.delay_proxy("link-jump", self.jump.port, cfg.delay),
                "jump-far": self.delay_proxy("far-jump", self.jump.port, cfg.far_delay, "jump-far"),
            }
            # The direct path (no tunnel) over the same delays
            self.server_proxies = {
                "link": self.delay_proxy("link-server", self.server_port, cfg.delay),
                "far": self.delay_proxy("far-server", self.server_port, cfg.far_delay),
            }
            self.server_proxies["jump"] = self.server_proxies["link"]
            ports = {link: int(child.info["port"]) for link, child in self.proxies.items()}
            self.world = harness.make_world(
                self.root,
                self.sshd,
                {"loopback": self.sshd.port, "link": ports["link"], "far": ports["far"]},
                jump=self.jump,
                jump_links={"jump": ports["jump"], "jump-far": ports["jump-far"]},
            )
            yield
        finally:
            if self.world is not None and "startup" in self.cfg.parts:
                startup.cleanup(self.world)
            self.children.close()
            if os.environ.get("BENCH_KEEP_TMP"):
                print(f"kept {self.root}", file=sys.stderr)
            else:
                shutil.rmtree(self.root, ignore_errors=True)

    def delay_proxy(self, name: str, target: int, delay: float, trace: str | None = None) -> Child:
        traced = ["--trace", str(self.traces[trace])] if trace else []
        return self.children.python(
            name,
            "benchmarks.delayproxy",
            "--target",
            str(target),
            "--delay",
            str(delay),
            *traced,
        )

    # tunnels --------------------------------------------------------------------------------

    def direct_port(self, link: str) -> int:
        return (
            self.server_port if link == "loopback" else int(self.server_proxies[link].info["port"])
        )

    def start_ssh(self, link: str, tag: str = "") -> tuple[Child, int]:
        assert self.world is not None
        port = harness.free_port()
        argv = harness.ssh_forward_argv(self.world, link, port, self.server_port)
        child = self.children.command(f"ssh-{link}{tag}", argv, env=self.world.env)
        harness.wait_port(port, child)
        self.results.info.setdefault(
            "ssh_cipher", harness.ssh_cipher(self.root / "logs" / f"{child.name}.log")
        )
        return child, port

    def start_forwarder(
        self, link: str, env_extra: dict[str, str], tag: str = ""
    ) -> tuple[Child, int]:
        assert self.world is not None
        env = {**self.world.env, **env_extra}
        child = self.children.python(
            f"forwarder-{link}{tag}",
            "benchmarks.forwarder_proc",
            self.world.profile_for(link),
            str(self.server_port),
            env=env,
        )
        port = int(child.info["port"])
        harness.wait_port(port, child)
        if not env_extra:
            self.results.info.setdefault(
                "colabtunnel_cipher", f"{child.info['cipher']} + {child.info['mac']}"
            )
            self.results.info.setdefault("colabtunnel_window", child.info["window"])
        return child, port

    # measurements ---------------------------------------------------------------------------

    def measure(self, port: int, client: Child | None, what: str, link: str) -> dict[str, float]:
        """One workload through `port`; its result and what the processes spent on it."""
        cfg = self.cfg
        sessions = (
            harness.sshd_sessions(self.sshd) + harness.sshd_sessions(self.jump)
            if client is not None
            else []
        )
        # the client and its children: `ssh -J` runs the jump's ssh as one
        pids = {"client": harness.process_tree(client.pid) if client else [], "sshd": sessions}
        before = {k: harness.cpu_seconds(v) for k, v in pids.items()}
        if what == "download":
            seconds = harness.download(port, cfg.download)
            out = {"MBps": cfg.download / seconds / MB, "bytes": cfg.download}
        elif what == "upload":
            seconds = harness.upload(port, cfg.upload)
            out = {"MBps": cfg.upload / seconds / MB, "bytes": cfg.upload}
        else:
            count = cfg.rtts if link == "loopback" else cfg.link_rtts
            out = {"rtt_us": harness.pingpong(port, count) * 1e6}
        for key, pid_list in pids.items():
            if pid_list:
                out[f"{key}_cpu_s"] = harness.cpu_seconds(pid_list) - before[key]
        return out

    def link_label(self, link: str) -> str:
        cfg = self.cfg
        return {
            "loopback": "loopback",
            "link": f"{cfg.delay * 2000:g} ms RTT link",
            "far": f"{cfg.far_delay * 2000:g} ms RTT link",
            "jump": f"{cfg.delay * 2000:g} ms RTT link to a jump host (ssh -J + -L)",
        }[link]

    def declare_transfer_metrics(self) -> None:
        r, cfg = self.results, self.cfg
        for link in cfg.links:
            sec = f"transfer, {self.link_label(link)}"
            work = WORKLOADS[link]
            if "download" in work:
                r.declare(
                    f"{link}.download",
                    f"download {cfg.download / MB:g} MB",
                    "MB/s",
                    "higher",
                    PATHS,
                    sec,
                )
            if "upload" in work:
                r.declare(
                    f"{link}.upload",
                    f"upload {cfg.upload / MB:g} MB",
                    "MB/s",
                    "higher",
                    PATHS,
                    sec,
                )
            if "rtt" in work:
                r.declare(f"{link}.rtt", "64 B round trip (median)", "us", "lower", PATHS, sec)
                r.declare(
                    f"{link}.rtt_added", "round trip added to direct", "us", "lower", PATHS[1:], sec
                )
            if "download" in work:
                r.declare(
                    f"{link}.client_cpu_download",
                    "client CPU per GB down",
                    "s/GB",
                    "lower",
                    PATHS[1:],
                    sec,
                )
            if "upload" in work:
                r.declare(
                    f"{link}.client_cpu_upload",
                    "client CPU per GB up",
                    "s/GB",
                    "lower",
                    PATHS[1:],
                    sec,
                )
            if "download" in work:
                r.declare(
                    f"{link}.sshd_cpu_download",
                    "sshd CPU per GB down",
                    "s/GB",
                    "lower",
                    PATHS[1:],
                    sec,
                )

    def transfers(self, link: str) -> None:
        cfg, r = self.cfg, self.results
        self.log(f"{link}: starting ssh -L and the forwarder")
        ssh, ssh_port = self.start_ssh(link)
        fwd, fwd_port = self.start_forwarder(link, {})
        variants = [
            (label, *self.start_forwarder(link, env, f"-{i}"))
            for i, (label, env) in enumerate(cfg.variants)
        ]
        paths: list[tuple[str, int, Child | None]] = [
            ("direct", self.direct_port(link), None),
            ("ssh", ssh_port, ssh),
            ("colabtunnel", fwd_port, fwd),
        ]
        try:
            for rep in range(cfg.repeat):
                self.log(f"{link}: repeat {rep + 1}/{cfg.repeat}")
                rtts: dict[str, float] = {}
                for what in WORKLOADS[link]:
                    for name, port, client in paths:
                        out = self.measure(port, client, what, link)
                        if what == "rtt":
                            rtts[name] = out["rtt_us"]
                            r.add(f"{link}.rtt", name, out["rtt_us"])
                            continue
                        r.add(f"{link}.{what}", name, out["MBps"])
                        if client is not None:
                            per_gb = 1e9 / out["bytes"]
                            r.add(f"{link}.client_cpu_{what}", name, out["client_cpu_s"] * per_gb)
                            if what == "download":
                                r.add(f"{link}.sshd_cpu_download", name, out["sshd_cpu_s"] * per_gb)
                    # variants: throughput on every link, round trips on loopback only (cheap)
                    for label, child, port in (
                        variants if what != "rtt" or link == "loopback" else []
                    ):
                        out = self.measure(port, child, what, link)
                        if what == "rtt":
                            self.variant_add(label, f"{link}.rtt", out["rtt_us"])
                            continue
                        self.variant_add(label, f"{link}.{what}", out["MBps"])
                        if what == "download":
                            per_gb = 1e9 / out["bytes"]
                            self.variant_add(
                                label, f"{link}.client_cpu_download", out["client_cpu_s"] * per_gb
                            )
                            self.variant_add(
                                label, f"{link}.sshd_cpu_download", out["sshd_cpu_s"] * per_gb
                            )
                if rtts:
                    for name in ("ssh", "colabtunnel"):
                        # what the tunnel adds to the direct path's round trip (at least 0.1 µs)
                        r.add(f"{link}.rtt_added", name, max(rtts[name] - rtts["direct"], 0.1))
            for label, child, _ in variants:
                self.variant_add(
                    label, f"{link}.peak_rss", harness.proc_status_kb(child.pid, "VmHWM") / 1024
                )
            self.variant_add(
                "default", f"{link}.peak_rss", harness.proc_status_kb(fwd.pid, "VmHWM") / 1024
            )
        finally:
            for _, child, _ in variants:
                self.children.stop(child)
            self.children.stop(fwd)
            self.children.stop(ssh)

    def variant_add(self, label: str, key: str, value: float) -> None:
        env = dict(self.cfg.variants).get(label, {})
        variant = self.results.variants.setdefault(label, {"env": env, "runs": {}})
        variant["runs"].setdefault(key, []).append(value)

    def memory(self) -> None:
        """Peak RSS of the tunnel client while `rss_bytes` go through it (fresh process each time)."""
        cfg, r = self.cfg, self.results
        key = "memory.peak_rss"
        r.declare(
            key, f"peak RSS moving {cfg.rss_bytes / MB:g} MB", "MB", "lower", PATHS[1:], "memory"
        )
        r.declare(
            "memory.rss_before", "RSS before (connected, idle)", "MB", "lower", PATHS[1:], "memory"
        )
        for rep in range(cfg.repeat):
            self.log(f"memory: repeat {rep + 1}/{cfg.repeat}, {cfg.rss_bytes / MB:g} MB each")
            for name in ("ssh", "colabtunnel"):
                child, port = (
                    self.start_ssh("loopback", "-rss")
                    if name == "ssh"
                    else self.start_forwarder("loopback", {}, "-rss")
                )
                try:
                    r.add(
                        "memory.rss_before", name, harness.proc_status_kb(child.pid, "VmRSS") / 1024
                    )
                    with harness.RssSampler(child.pid) as sampler:
                        harness.download(port, cfg.rss_bytes)
                    r.add(key, name, sampler.peak_mb)
                finally:
                    self.children.stop(child)

    def declare_startup_metrics(self) -> None:
        r = self.results
        sec = "start-up"
        one = ("colabtunnel",)

        def declare(key: str, label: str, unit: str = "s", paths: tuple[str, ...] = one) -> None:
            r.declare(key, label, unit, "lower", paths, sec)

        declare("startup.up_to_url", "`up` to URL, loopback")
        for step in STEPS:
            declare(f"startup.step.{step}", f"  step: {step}")
        declare("startup.jupyter_own", "Jupyter's own start-up on the host", paths=("jupyter",))
        declare("startup.jupyter_kernel", "  then its first kernel runs code", paths=("jupyter",))
        declare("startup.overhead", "`up` minus Jupyter's server start-up")
        declare("startup.overhead_kernel", "`up` minus server and first kernel")
        rtt_ms = f"{self.cfg.far_delay * 2000:g} ms RTT"
        for route, label in UP_ROUTES.items():
            where = label.replace("far link", f"{rtt_ms} link")
            declare(f"startup.{route}.up_to_url", f"`up` to URL, {where}")
            for step in STEPS:
                declare(f"startup.{route}.step.{step}", f"  step: {step}")
            declare(
                f"startup.{route}.round_trips_time",
                "  round trips: (`up` here − on loopback) / RTT",
                "n",
            )
            declare(
                f"startup.{route}.round_trips",
                "  round trips: link in use / RTT, all steps",
                "n",
            )
            for step in STEPS:
                declare(f"startup.{route}.rt.{step}", f"    {step}", "n")
        declare("startup.up_again", "`up` again while up (same URL)")
        declare("startup.up_again_ssh", "  SSH connections it opened", "n")
        declare("startup.help", "`colabtunnel --help`")
        declare("startup.status", "`colabtunnel status` (tunnel up)")
        declare("startup.down", "`colabtunnel down`")
        declare("startup.complete", "Tab completion of `up` (< 0.15 s)")
        declare("startup.keeper_rss", "keeper RSS once up (idle)", "MB")

    def startup(self) -> None:
        cfg, r = self.cfg, self.results
        assert self.world is not None
        self.declare_startup_metrics()
        world = self.world
        for rep in range(cfg.startup_repeat):
            self.log(f"start-up: repeat {rep + 1}/{cfg.startup_repeat}")
            run = startup.run_up(world, "bench")
            r.add("startup.up_to_url", "colabtunnel", run.total)
            for step, seconds in run.steps.items():
                r.add(f"startup.step.{step}", "colabtunnel", seconds)
            if run.keeper_rss_mb:
                r.add("startup.keeper_rss", "colabtunnel", run.keeper_rss_mb)
            accepted = harness.connections_accepted(self.sshd)
            again, url = startup.up_again(world, "bench")
            if url != run.url:
                raise RuntimeError(f"`up` again printed another URL: {url} != {run.url}")
            r.add("startup.up_again", "colabtunnel", again)
            r.add(
                "startup.up_again_ssh",
                "colabtunnel",
                harness.connections_accepted(self.sshd) - accepted,
            )
            if rep == 0:
                for _ in range(cfg.cli_repeat):
                    r.add("startup.status", "colabtunnel", startup.wall(world, "status"))
            r.add("startup.down", "colabtunnel", startup.wall(world, "down", "bench"))
            own = startup.jupyter_own_startup(world)
            self.results.info["jupyter_flavour"] = own.label
            r.add("startup.jupyter_own", "jupyter", own.server)
            r.add("startup.jupyter_kernel", "jupyter", own.kernel)
            # paired with this repeat's `up`: the difference is steadier than one of medians
            r.add("startup.overhead", "colabtunnel", run.total - own.server)
            r.add("startup.overhead_kernel", "colabtunnel", run.total - own.server - own.kernel)
            for route in UP_ROUTES:
                self.up_over(route, run)
        for _ in range(cfg.cli_repeat):
            r.add("startup.help", "colabtunnel", startup.wall(world, "--help"))
            r.add("startup.complete", "colabtunnel", startup.complete(world, "up"))

    def up_over(self, route: str, loopback: startup.UpRun) -> None:
        """`up` over a far route, its steps, and the round trips it waited for: by wall clock
        against this repeat's loopback `up` (Jupyter's own start-up, which moves with the
        machine's load, left out of both), and by the time the link was in use."""
        assert self.world is not None
        r, rtt = self.results, 2 * self.cfg.far_delay
        alias = self.world.profile_for(route)
        run = startup.run_up(self.world, alias)
        r.add(f"startup.{route}.up_to_url", "colabtunnel", run.total)
        for step, seconds in run.steps.items():
            r.add(f"startup.{route}.step.{step}", "colabtunnel", seconds)
        beyond = (run.total - run.steps["ready"]) - (loopback.total - loopback.steps["ready"])
        r.add(f"startup.{route}.round_trips_time", "colabtunnel", beyond / rtt)
        t0, end = run.bounds[0][1], run.bounds[-1][2]
        chunks = roundtrips.read_trace(self.traces[route], since=t0)
        counts = roundtrips.per_step(chunks, self.cfg.far_delay, [*run.bounds, ("total", t0, end)])
        r.add(f"startup.{route}.round_trips", "colabtunnel", counts["total"].round_trips)
        # the last run's steps on the trace's clock, to read a trace (BENCH_KEEP_TMP=1) against
        r.info[f"{route}.steps"] = [(name, start, end) for name, start, end in run.bounds]
        for step in STEPS:
            r.add(f"startup.{route}.rt.{step}", "colabtunnel", counts[step].round_trips)
        startup.wall(self.world, "down", alias)

    def run(self) -> Results:
        self.declare_transfer_metrics()
        with self.setup():
            if "transfer" in self.cfg.parts:
                for link in self.cfg.links:
                    self.transfers(link)
            if "memory" in self.cfg.parts:
                self.memory()
            if "startup" in self.cfg.parts:
                self.startup()
        self.results.finish()
        for variant in self.results.variants.values():
            variant["median"] = {k: statistics.median(v) for k, v in variant["runs"].items()}
        return self.results


# -- report --------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    import paramiko

    ssh_version = "?"
    with contextlib.suppress(OSError):
        import subprocess

        ssh_version = subprocess.run(
            [harness.SSH, "-V"], capture_output=True, text=True, check=False
        ).stderr.strip()
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "paramiko": paramiko.__version__,
        "openssh": ssh_version,
    }


def loadavg() -> str:
    with contextlib.suppress(OSError):
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return "?"


def fmt(value: float | None, unit: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if unit == "us":
        return f"{value / 1000:.2f} ms" if value >= 10_000 else f"{value:.0f} µs"
    if unit == "MB/s":
        return f"{value:.0f}" if value >= 100 else f"{value:.1f}"
    if unit == "s":
        return f"{value:.3f}" if value < 1 else f"{value:.2f}"
    if unit == "n":
        return f"{value:.1f}"
    return f"{value:.2f}" if value < 10 else f"{value:.0f}"


def table(results: Results, cfg: Config, mach: dict[str, Any]) -> str:
    out = [
        f"machine: {mach['nproc']} cores, {mach['cpu']}, {mach['memory_gb']} GB RAM; "
        f"Python {mach['python']}, paramiko {mach['paramiko']}, {mach['openssh']}",
        f"medians of {cfg.repeat} run(s){' (QUICK MODE: tiny sizes)' if cfg.quick else ''}; "
        f"MB = 10^6 bytes; ciphers: ssh -L {results.info.get('ssh_cipher', '?')}, "
        f"colabtunnel {results.info.get('colabtunnel_cipher', '?')}",
        f"load average before/after: {results.info.get('loadavg_start')} / "
        f"{results.info.get('loadavg_end')} (other work on the machine makes the numbers noisy)",
    ]
    head = f"{'metric':<48} {'unit':>5} {'direct':>10} {'ssh -L':>10} {'colabtunnel':>12} {'ct/ssh':>8}"
    section = None
    for metric in results.metrics.values():
        if metric["section"] != section:
            section = metric["section"]
            out += ["", f"== {section}", head]
        med = metric["median"]
        ratio = metric["ratio_colabtunnel_to_ssh"]
        arrow = "↑" if metric["better"] == "higher" else "↓"
        first = med.get("direct", med.get("jupyter"))
        ratio_text = f"{ratio:.2f}{arrow}" if ratio is not None else ""
        out.append(
            f"{metric['label']:<48} {metric['unit']:>5} {fmt(first, metric['unit']):>10} "
            f"{fmt(med.get('ssh'), metric['unit']):>10} "
            f"{fmt(med.get('colabtunnel'), metric['unit']):>12} {ratio_text:>8}"
        )
    if "startup.up_to_url" in results.metrics:
        out.append("(start-up: Jupyter's own time is in the 'direct' column)")
    if results.variants:
        keys = [
            ("loopback.download", "lo down", "MB/s"),
            ("loopback.upload", "lo up", "MB/s"),
            ("link.download", "link down", "MB/s"),
            ("link.upload", "link up", "MB/s"),
            ("far.download", "far down", "MB/s"),
            ("jump.download", "jump down", "MB/s"),
            ("loopback.rtt", "lo RTT", "us"),
            ("loopback.sshd_cpu_download", "sshd s/GB", "s/GB"),
            ("loopback.client_cpu_download", "fwd s/GB", "s/GB"),
            ("loopback.peak_rss", "RSS lo", "MB"),
            ("link.peak_rss", "RSS link", "MB"),
        ]
        out += [
            "",
            "== forwarder variants (colabtunnel's forwarder, paramiko patched in its own process)",
        ]
        out.append(f"{'variant':<28}" + "".join(f"{label:>11}" for _, label, _ in keys))
        default = {
            key: results.metrics[key]["median"]["colabtunnel"]
            for key, _, _ in keys
            if key in results.metrics
        }
        rows = [
            (
                "default (as shipped)",
                {**default, **results.variants.get("default", {}).get("median", {})},
            )
        ]
        rows += [
            (f"{label} ({','.join(f'{k}={v}' for k, v in v_['env'].items())})", v_["median"])
            for label, v_ in results.variants.items()
            if label != "default"
        ]
        for label, med in rows:
            out.append(
                f"{label[:28]:<28}" + "".join(f"{fmt(med.get(k), unit):>11}" for k, _, unit in keys)
            )
    return "\n".join(out)


def to_json(results: Results, cfg: Config, mach: dict[str, Any]) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA,
        "machine": mach,
        "config": {
            "quick": cfg.quick,
            "repeat": cfg.repeat,
            "download_bytes": cfg.download,
            "upload_bytes": cfg.upload,
            "rtts_loopback": cfg.rtts,
            "rtts_link": cfg.link_rtts,
            "link_delay_each_way_s": cfg.delay,
            "far_delay_each_way_s": cfg.far_delay,
            "round_trip_targets": ROUND_TRIP_TARGETS,
            "rss_bytes": cfg.rss_bytes,
            "variants": {label: env for label, env in cfg.variants},
        },
        "info": results.info,
        "paths": {
            "direct": "no tunnel",
            "ssh": "OpenSSH ssh -N -L",
            "colabtunnel": "colabtunnel Forwarder",
        },
        "metrics": results.metrics,
        "variants": results.variants,
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--quick", action="store_true", help="tiny sizes, 1 repeat: checks it works (<1 min)"
    )
    parser.add_argument(
        "--repeat",
        type=int,
        help="repeats per measurement; medians are reported (default 3, quick 1)",
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--download-mb", type=float, help="download size (default 200; quick 5)")
    parser.add_argument("--upload-mb", type=float, help="upload size (default 50; quick 5)")
    parser.add_argument(
        "--rtts", type=int, help="round trips on loopback (default 2000; quick 200)"
    )
    parser.add_argument(
        "--link-rtts", type=int, help="round trips on the long link (default 200; quick 50)"
    )
    parser.add_argument(
        "--delay-ms", type=float, help="long-link delay each way (default 25; quick 2)"
    )
    parser.add_argument(
        "--far-rtt-ms",
        type=float,
        help="RTT of the far link: `up`'s round trips and a download (default 100, quick too)",
    )
    parser.add_argument(
        "--rss-mb", type=float, help="bytes moved for the memory test (default 1000; quick 20)"
    )
    parser.add_argument(
        "--windows", help="extra forwarder variants with these SSH windows, e.g. 8M,32M"
    )
    parser.add_argument(
        "--variant",
        action="append",
        help="extra forwarder variant LABEL:VAR=VALUE[,VAR=VALUE] (BENCH_WINDOW, BENCH_PACKET, "
        "BENCH_CIPHER, BENCH_PIPE, BENCH_DIRECT; see benchmarks/forwarder_proc.py)",
    )
    parser.add_argument("--no-startup", action="store_true", help="skip the start-up measurements")
    parser.add_argument(
        "--links", help=f"transfers on these links only, e.g. far,jump (of {', '.join(LINKS)})"
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=sorted(PARTS),
        help="run only this part (repeatable): for iterating on one thing",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = Config.from_args(args)
    started = time.monotonic()

    def log(message: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {message}", file=sys.stderr, flush=True)

    def interrupted(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupted)
    mach = machine()
    load_start = loadavg()
    try:
        results = Bench(cfg, log).run()
    except KeyboardInterrupt:
        print("interrupted; processes stopped", file=sys.stderr)
        return 130
    results.info["loadavg_start"] = load_start
    results.info["loadavg_end"] = loadavg()
    print(table(results, cfg, mach))
    if args.json:
        args.json.write_text(json.dumps(to_json(results, cfg, mach), indent=1))
    log("done")
    over = round_trips_over_target(results) if cfg.quick else []
    for message in over:
        print(f"FAIL: {message}", file=sys.stderr)
    return 1 if over else 0


def round_trips_over_target(results: Results) -> list[str]:
    """The far routes whose `up` waited for more than QUICK_MARGIN × its target's round trips
    (the link measure: it does not move with the machine's load, a regression does move it)."""
    over = []
    for route, target in ROUND_TRIP_TARGETS.items():
        runs = results.metrics.get(f"startup.{route}.round_trips", {}).get("median", {})
        measured = runs.get("colabtunnel")
        if isinstance(measured, int | float) and measured > QUICK_MARGIN * target:
            over.append(
                f"`up` over {UP_ROUTES[route]} waited for {measured:.1f} round trips "
                f"(target {target}, fails above {QUICK_MARGIN * target:g})"
            )
    return over


if __name__ == "__main__":
    sys.exit(main())
