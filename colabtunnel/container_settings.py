"""The `[profiles.NAME.container]` table: which engine and image run Jupyter on the host, checked
on load.

Everything here becomes part of `ENGINE run`; nothing becomes a secret (`env` shows in
`ENGINE inspect` to everyone who may use the engine, so the token never goes there). Options
colabtunnel sets itself (the name, the label, the published port, detaching) are refused in
`extra_args` with exit 2, naming the option.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass

from colabtunnel.settings_tables import Check, Where, choice, read, refuse

PULL = ("missing", "always", "never")
# Google's Colab runtime image (research.google.com/colaboratory/local-runtimes.html): its own
# start-up serves Colab on container port 8080 and prints the token it made up in its log.
COLAB_IMAGE = "us-docker.pkg.dev/colab-images/public/runtime"
COLAB_PORT = 8080
JUPYTER_PORT = 8888  # where colabtunnel starts Jupyter inside a container: its own namespace
START = ("colabtunnel", "image")
REFUSED = {
    "-p": "colabtunnel publishes Jupyter's port itself, on the host's 127.0.0.1 only",
    "--publish": "colabtunnel publishes Jupyter's port itself, on the host's 127.0.0.1 only",
    "-P": "colabtunnel publishes Jupyter's port itself, on the host's 127.0.0.1 only",
    "--publish-all": "colabtunnel publishes Jupyter's port itself, on the host's 127.0.0.1 only",
    "--name": "colabtunnel names the container after the profile, to find it again",
    "--label": "colabtunnel labels the container with the profile, to find it again",
    "-l": "colabtunnel labels the container with the profile, to find it again",
    "-d": "colabtunnel runs the container detached itself",
    "--detach": "colabtunnel runs the container detached itself",
    "--rm": "`down` removes the container; --rm would lose its log when Jupyter exits",
    "-e": "the token never goes into the environment; set other variables with env",
    "--env": "the token never goes into the environment; set other variables with env",
    "--network": "a published port needs the container's own network (host networking would "
    "put Jupyter on every address of the host)",
    "--net": "a published port needs the container's own network",
    "--entrypoint": 'colabtunnel starts Jupyter itself; set start = "image" to run the image\'s own',
    "-it": "the container runs detached, with no terminal",
    "-t": "the container runs detached, with no terminal",
    "--tty": "the container runs detached, with no terminal",
}


@dataclass(frozen=True)
class ContainerSettings:
    image: str = ""
    engine: tuple[str, ...] = ("docker",)  # a command: ("sudo", "docker") too
    gpus: str = "all"  # "all", "0,1", "none"
    mounts: tuple[str, ...] = ()  # HOST:CONTAINER[:ro]; the profile's workdir is added
    env: tuple[tuple[str, str], ...] = ()  # (NAME, value): a frozen profile stays hashable
    pull: str = "missing"
    extra_args: tuple[str, ...] = ()
    jupyter: str = "jupyter"  # the command inside, for images whose Jupyter is not on PATH
    start: str = "colabtunnel"  # "image": the image's own start-up serves Jupyter (the Colab image)
    port: int = JUPYTER_PORT  # the container port Jupyter serves on

    @property
    def engine_line(self) -> str:
        return shlex.join(self.engine)

    def gpu_args(self, engine_kind: str) -> list[str]:
        """Docker's --gpus; Podman's CDI devices (the NVIDIA Container Toolkit's nvidia.com/gpu)."""
        if self.gpus == "none":
            return []
        if engine_kind == "podman":
            ids = ["all"] if self.gpus == "all" else self.gpus.split(",")
            return [f"--device=nvidia.com/gpu={i}" for i in ids]
        return ["--gpus", "all" if self.gpus == "all" else f'"device={self.gpus}"']


def check(value: object, key: str, where: Where) -> ContainerSettings:
    """The `container` table of a profile, every key checked; `image = "colab"` is the preset
    for Google's Colab runtime image."""
    values = read(value, key, where, _CHECKS, 'image = "..."')
    if not values.get("image"):
        raise where.fail(
            key,
            f"'{key}' needs an image",
            'add image = "nvcr.io/nvidia/pytorch:24.05-py3" (or image = "colab" for Colab\'s '
            "runtime image)",
        )
    if values["image"] == "colab":
        values["image"] = COLAB_IMAGE
        values.setdefault("start", "image")
        values.setdefault("port", COLAB_PORT)
    return ContainerSettings(**values)  # type: ignore[arg-type]  # each check returns its field's type


def _text(value: object, label: str, where: Where) -> str:
    if not isinstance(value, str) or not value.strip():
        raise where.fail(
            label, f"'{label}' must be a non-empty string", f'quote it: {label} = "..."'
        )
    return value.strip()


def _image(value: object, label: str, where: Where) -> tuple[str, object]:
    text = _text(value, label, where)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._/:@-]*", text):
        raise where.fail(
            label,
            f"'{label}' is not an image reference: {text!r}",
            'for example image = "nvcr.io/nvidia/pytorch:24.05-py3"',
        )
    return "image", text


def _engine(value: object, label: str, where: Where) -> tuple[str, object]:
    text = _text(value, label, where)
    try:
        words = tuple(shlex.split(text))
    except ValueError as exc:
        raise where.fail(
            label, f"'{label}' cannot be read: {exc}", 'for example engine = "podman"'
        ) from None
    return "engine", words


def _gpus(value: object, label: str, where: Where) -> tuple[str, object]:
    text = _text(value, label, where) if not isinstance(value, int) else str(value)
    if text not in ("all", "none") and not re.fullmatch(r"[0-9]+(,[0-9]+)*", text):
        raise where.fail(
            label,
            f'\'{label}\' must be "all", "none" or GPU indices such as "0,1", got {value!r}',
            'for example gpus = "all"',
        )
    return "gpus", text


def _strings(name: str, example: str) -> Check:
    def check_field(value: object, label: str, where: Where) -> tuple[str, object]:
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise where.fail(label, f"'{label}' must be an array of strings", example)
        return name, tuple(value)

    return check_field


def _mounts(value: object, label: str, where: Where) -> tuple[str, object]:
    name, mounts = _strings("mounts", 'for example mounts = ["/data:/data:ro"]')(
        value, label, where
    )
    for mount in mounts:  # type: ignore[attr-defined]  # a tuple of strings, checked above
        parts = mount.split(":")
        if not 2 <= len(parts) <= 3 or not all(parts[:2]) or not parts[1].startswith("/"):
            raise where.fail(
                label,
                f"'{label}' holds {mount!r}, which is not HOST:CONTAINER[:OPTIONS]",
                'for example mounts = ["/data:/data:ro"]',
            )
    return name, mounts


def _env(value: object, label: str, where: Where) -> tuple[str, object]:
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise where.fail(
            label,
            f"'{label}' must be a table of strings",
            f'for example {label} = {{ HF_HOME = "/data/hf" }}',
        )
    for name in value:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise where.fail(label, f"'{label}' has a bad variable name {name!r}", "use NAME_1")
        if name.startswith("JUPYTER_TOKEN"):
            raise where.fail(
                label,
                f"'{label}' may not set {name}: colabtunnel makes the token and keeps it out "
                "of the container's environment",
                f"remove {name} from {label}",
            )
    return "env", tuple(sorted(value.items()))


def _port(value: object, label: str, where: Where) -> tuple[str, object]:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise where.fail(label, f"'{label}' must be a port 1..65535", "for example port = 8888")
    return "port", value


def _extra_args(value: object, label: str, where: Where) -> tuple[str, object]:
    name, args = _strings("extra_args", 'for example extra_args = ["--shm-size=16g"]')(
        value, label, where
    )
    refuse(args, label, where, REFUSED)  # type: ignore[arg-type]  # a tuple of strings, checked above
    return name, args


_CHECKS: dict[str, Check] = {
    "image": _image,
    "engine": _engine,
    "gpus": _gpus,
    "mounts": _mounts,
    "env": _env,
    "pull": choice("pull", PULL),
    "extra_args": _extra_args,
    "jupyter": lambda value, label, where: ("jupyter", _text(value, label, where)),
    "start": choice("start", START),
    "port": _port,
}
