"""What the launchers' profile tables ([profiles.NAME.slurm], [profiles.NAME.container]) share:
reading a table key by key, each key's own check, a choice among words, and the `extra_args`
options a launcher sets itself and so refuses (exit 2, naming the option)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol

from colabtunnel.errors import ConfigError


class Where(Protocol):
    """Where a value came from, to name it in an error (profiles._Where)."""

    def fail(self, key: str | None, problem: str, hint: str) -> ConfigError: ...


# A key's check: (value, its label "slurm.time", where) -> (the settings field, the value checked);
# a value of None leaves the field at its default.
Check = Callable[[object, str, Where], tuple[str, object]]


def read(
    value: object, key: str, where: Where, checks: Mapping[str, Check], example: str
) -> dict[str, object]:
    """The fields of the table `key`, every key checked; `example` is a line of one."""
    if not isinstance(value, Mapping):
        raise where.fail(
            key,
            f"'{key}' must be a table ([profiles.NAME.{key}])",
            f"write it as [profiles.NAME.{key}] with {example} and other keys below it",
        )
    values: dict[str, object] = {}
    for name, item in value.items():
        label = f"{key}.{name}"
        check_one = checks.get(name)
        if check_one is None:
            raise where.fail(
                key,
                f"unknown key '{label}'",
                f"known keys of the {key} table: {', '.join(checks)}",
            )
        field, checked = check_one(item, label, where)
        if checked is not None:
            values[field] = checked
    return values


def choice(name: str, choices: tuple[str, ...]) -> Check:
    def check_field(value: object, label: str, where: Where) -> tuple[str, object]:
        if value not in choices:
            raise where.fail(
                label,
                f"'{label}' must be one of {', '.join(choices)}, got {value!r}",
                f'for example {label} = "{choices[0]}"',
            )
        return name, str(value)

    return check_field


def refuse(
    args: tuple[str, ...] | list[str], label: str, where: Where, refused: Mapping[str, str]
) -> None:
    """An option of `args` that the launcher sets itself is an error naming it and why."""
    for arg in args:
        option = arg.split("=", 1)[0]
        if option in refused:
            raise where.fail(
                label,
                f"'{label}' may not set {option}: {refused[option]}",
                f"remove {arg!r} from {label}",
            )
