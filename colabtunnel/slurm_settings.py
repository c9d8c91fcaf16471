"""The `[profiles.NAME.slurm]` table: what a cluster profile asks Slurm for, checked on load.

Everything here becomes sbatch options or a deadline; nothing becomes a secret. Options that would
break the launcher (where the job writes its output, its name, its environment, the signal that
warns before the time limit) are refused in `extra_args` with exit 2, naming the option.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from colabtunnel.durations import human_seconds, is_slurm_time
from colabtunnel.settings_tables import Check, Where, choice, read, refuse

ACCESS = ("auto", "srun", "node-ssh", "network")
GPU_FLAGS = ("gres", "gpus")
DEFAULT_SESSION_ROOT = "~/.colabtunnel/slurm"
# Options colabtunnel sets itself (or that would make the job something else), short forms too.
REFUSED = {
    "--output": "the job's output goes to the session directory (0600), where `logs` reads it",
    "-o": "the job's output goes to the session directory (0600), where `logs` reads it",
    "--error": "the job's errors go to the session directory, beside its output",
    "-e": "the job's errors go to the session directory, beside its output",
    "--export": "the job's environment is the login shell's plus `activate`; use `env` instead",
    "--wrap": "colabtunnel sends the job's script itself",
    "--job-name": "colabtunnel names the job after the profile, to find it again",
    "-J": "colabtunnel names the job after the profile, to find it again",
    "--parsable": "colabtunnel reads sbatch's answer itself",
    "--signal": "colabtunnel asks for the time-limit warning itself",
    "--array": "one session is one job",
    "-a": "one session is one job",
}


@dataclass(frozen=True)
class SlurmSettings:
    partition: str | None = None
    gpus: str | None = None  # "1", "a100:2": --gres=gpu:… (or --gpus=… with gpu_flag)
    gpu_flag: str = "gres"
    cpus: int | None = None
    mem: str | None = None
    time: str | None = None  # sbatch --time format
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    extra_args: tuple[str, ...] = ()
    session_root: str = DEFAULT_SESSION_ROOT
    access: str = "auto"
    queue_timeout_s: int = 30 * 60
    start_timeout_s: int = 10 * 60

    def sbatch_options(self) -> list[str]:
        """The request, as sbatch options (the launcher adds its own: output, name, signal)."""
        options = []
        if self.partition:
            options.append(f"--partition={self.partition}")
        if self.gpus:
            flag = "--gres=gpu:" if self.gpu_flag == "gres" else "--gpus="
            options.append(flag + self.gpus)
        if self.cpus:
            options.append(f"--cpus-per-task={self.cpus}")
        for name, value in (
            ("mem", self.mem),
            ("time", self.time),
            ("account", self.account),
            ("qos", self.qos),
            ("constraint", self.constraint),
        ):
            if value:
                options.append(f"--{name}={value}")
        return [*options, *self.extra_args]


def check(value: object, key: str, where: Where) -> SlurmSettings:
    """The `slurm` table of a profile, every key checked (an empty string: the default)."""
    values = read(value, key, where, _CHECKS, 'partition = "gpu"')
    return SlurmSettings(**values)  # type: ignore[arg-type]  # each check returns its field's type


def _text(value: object, label: str, where: Where) -> str | None:
    if not isinstance(value, str):
        raise where.fail(label, f"'{label}' must be a string", f'quote it: {label} = "..."')
    return value.strip() or None


def _string_field(name: str) -> Check:
    def check_field(value: object, label: str, where: Where) -> tuple[str, object]:
        return name, _text(value, label, where)

    return check_field


def _gpus(value: object, label: str, where: Where) -> tuple[str, str | None]:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return "gpus", str(value)
    text = _text(value, label, where) if not isinstance(value, int) else None
    if text is None or not re.fullmatch(r"[A-Za-z0-9_.-]+(:[A-Za-z0-9_.-]+)*", text):
        raise where.fail(
            label,
            f"'{label}' must be a count or TYPE:COUNT, got {value!r}",
            'for example gpus = 1 or gpus = "a100:2"',
        )
    return "gpus", text


def _cpus(value: object, label: str, where: Where) -> tuple[str, int]:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 4096:
        raise where.fail(label, f"'{label}' must be an integer 1..4096", "for example cpus = 4")
    return "cpus", value


def _time(value: object, label: str, where: Where) -> tuple[str, str | None]:
    text = _text(value, label, where)
    if text is not None and not is_slurm_time(text):
        raise where.fail(
            label,
            f"'{label}' is not a time sbatch takes: {text!r}",
            'minutes, or [D-]HH:MM:SS: for example time = "04:00:00"',
        )
    return "time", text


def _timeout(name: str) -> Check:
    def check_field(value: object, label: str, where: Where) -> tuple[str, object]:
        seconds = human_seconds(str(value)) if isinstance(value, str | int) else None
        if isinstance(value, bool) or seconds is None or seconds <= 0:
            raise where.fail(
                label,
                f'\'{label}\' must be a duration such as "30m", "20s" or "1h30m", got {value!r}',
                f'for example {label} = "30m"',
            )
        return name, seconds

    return check_field


def _extra_args(value: object, label: str, where: Where) -> tuple[str, tuple[str, ...]]:
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise where.fail(
            label,
            f"'{label}' must be an array of strings",
            'for example extra_args = ["--exclusive"]',
        )
    refuse(value, label, where, REFUSED)
    for arg in value:
        if not arg.startswith("-"):
            raise where.fail(
                label,
                f"'{label}' holds {arg!r}, which is not an sbatch option",
                "write each option with its value: --exclusive, --nodelist=gpu01",
            )
    return "extra_args", tuple(value)


_CHECKS: dict[str, Check] = {
    "partition": _string_field("partition"),
    "gpus": _gpus,
    "gpu_flag": choice("gpu_flag", GPU_FLAGS),
    "cpus": _cpus,
    "mem": _string_field("mem"),
    "time": _time,
    "account": _string_field("account"),
    "qos": _string_field("qos"),
    "constraint": _string_field("constraint"),
    "extra_args": _extra_args,
    "session_root": _string_field("session_root"),
    "access": choice("access", ACCESS),
    "queue_timeout": _timeout("queue_timeout_s"),
    "start_timeout": _timeout("start_timeout_s"),
}
