"""The command line: parse, call one function per command, render. No logic lives here."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer

from colabtunnel import __version__, output
from colabtunnel.errors import EXIT_CONFIG, EXIT_INTERRUPTED, EXIT_RUNTIME, ColabtunnelError

app = typer.Typer(
    name="colabtunnel",
    help="Google Colab's notebook UI on a GPU you reach over SSH.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    # Plain click help: rich's renderer costs 0.1-0.15 s of every `--help` (0.08 s without it).
    rich_markup_mode=None,
)
T = TypeVar("T")
_debug = False


def _profile_names(incomplete: str) -> list[str]:
    """Shell completion: profile names, read straight from profiles.toml (no SSH, no validation)."""
    from colabtunnel.completion import profile_names

    return profile_names(incomplete)


ProfileArg = Annotated[
    str,
    typer.Argument(
        metavar="PROFILE",
        help="Profile name from profiles.toml, or `local`.",
        autocompletion=_profile_names,
    ),
]
CopyOpt = Annotated[bool, typer.Option("--copy", help="Also put the URL on the clipboard.")]
OpenOpt = Annotated[
    bool, typer.Option("--open", help="Also open Colab (colab.research.google.com) in the browser.")
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Print only the URL.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document.")]


def _run(fn: Callable[[], T], *, json_command: str | None = None) -> T:
    """Call a command; turn the tool's own errors into `error:`/`hint:` lines and exit codes."""
    try:
        return fn()
    except ColabtunnelError as exc:
        if json_command:
            output.emit_json(
                json_command, ok=False, error={"message": exc.message, "hint": exc.hint}
            )
        output.error(exc.message, exc.hint)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except typer.Exit:
        raise
    except Exception as exc:
        if _debug:
            raise
        from colabtunnel.redact import mask

        output.error(
            f"internal error: {mask(repr(exc))}", "run again with --debug for the traceback"
        )
        raise typer.Exit(EXIT_RUNTIME) from None


def _version(value: bool) -> None:
    if value:
        print(f"colabtunnel {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
    verbose: Annotated[bool, typer.Option("-v", "--verbose", help="More log output.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    global _debug
    _debug = debug
    if verbose or debug:
        from colabtunnel.logs import setup_console_logging

        setup_console_logging(verbose=True)


@app.command(short_help="Start Jupyter on the host, forward it, print the URL.")
def up(
    profile: ProfileArg,
    foreground: Annotated[
        bool, typer.Option("--foreground", help="Stay attached; Ctrl-C tears down.")
    ] = False,
    accept_new: Annotated[
        bool, typer.Option("--accept-new", help="Trust an unknown host key (never a changed one).")
    ] = False,
    local_port: Annotated[int | None, typer.Option(help="Local port (1-65535).")] = None,
    remote_port: Annotated[int | None, typer.Option(help="Port on the host (1-65535).")] = None,
    timeout: Annotated[float, typer.Option(min=1, help="Seconds to wait for Jupyter.")] = 120.0,
    idle_timeout: Annotated[
        str | None,
        typer.Option(help='End Jupyter after this long with nothing to do ("2h", "30m", "off").'),
    ] = None,
    json_out: JsonOpt = False,
    copy: CopyOpt = False,
    open_: OpenOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Start (or re-attach to) Jupyter on the host, forward it, check it, print the URL."""
    from colabtunnel.commands import up as cmd

    progress = output.Progress(quiet=quiet)
    handoff = _Handoff(copy=copy, open_=open_, quiet=quiet)
    prompter = output.TerminalPrompter()
    request = cmd.UpRequest(profile, accept_new, timeout, local_port, remote_port, idle_timeout)
    json_command = "up" if json_out else None
    if foreground:

        def ready(record: Any) -> None:
            _render_up(record, reused=False, json_out=json_out, handoff=handoff)
            progress.step(
                "running in the foreground; Ctrl-C stops the tunnel and the remote Jupyter"
            )

        _run(
            lambda: cmd.up_foreground(request, progress, prompter, ready), json_command=json_command
        )
        return
    result = _run(lambda: cmd.up(request, progress, prompter), json_command=json_command)
    _render_up(result.record, reused=result.reused, json_out=json_out, handoff=handoff)


def _render_up(record: Any, *, reused: bool, json_out: bool, handoff: _Handoff) -> None:
    from colabtunnel.jupyter.gpus import GpuReport

    gpus = GpuReport.from_json(record.gpu_report)
    if json_out:
        output.emit_json("up", ok=True, reused=reused, tunnel=record.public(), gpus=gpus.public())
        handoff.give(record.url)
        return
    if reused and not handoff.quiet:
        print(
            f"{record.profile} is already up (since {output.duration(_age(record))} ago):",
            file=sys.stderr,
        )
    if not handoff.quiet:
        for line in gpus.lines(output.where(record.host)):
            print(f"  {line}", file=sys.stderr, flush=True)
    print(record.url, flush=True)
    handoff.give(record.url)
    if handoff.quiet:
        return
    for line in output.BROWSER_STEPS:
        print(f"  → {line}", file=sys.stderr)
    if not record.foreground:
        print(f"  stop it with: colabtunnel down {record.profile}", file=sys.stderr)


class _Handoff:
    """--copy / --open / --quiet, for `up` and `url`: what to do with the URL once it is printed."""

    def __init__(self, *, copy: bool, open_: bool, quiet: bool) -> None:
        self.copy, self.open, self.quiet = copy, open_, quiet

    def give(self, url: str) -> None:
        from colabtunnel import desktop

        if self.copy:
            copied = desktop.copy(url)
            if copied.tool is None or not self.quiet:  # a failure is said even with --quiet
                print(f"  {copied.message()}", file=sys.stderr)
        if self.open:
            said = desktop.open_colab()
            if not self.quiet:
                print(f"  {said}", file=sys.stderr)


def _age(record: Any) -> float:
    import time

    return time.time() - float(record.started_at)


@app.command()
def down(
    profiles: Annotated[
        list[str] | None,
        typer.Argument(help="Profiles to stop; none = all.", autocompletion=_profile_names),
    ] = None,
) -> None:
    """Stop the tunnel(s) and the remote Jupyter."""
    from colabtunnel.commands import down as cmd

    results = _run(lambda: cmd.down(profiles or [], output.Progress(), output.TerminalPrompter()))
    if not any(r.was_up for r in results):
        print("nothing was running", file=sys.stderr)
    for result in results:
        if result.was_up:
            print(f"stopped {result.profile}", file=sys.stderr)
        if result.warning:
            print(f"warning: {result.warning}", file=sys.stderr)


@app.command()
def status(
    profile: Annotated[
        str | None, typer.Argument(help="Only this profile.", autocompletion=_profile_names)
    ] = None,
    json_out: JsonOpt = False,
    no_gpu: Annotated[
        bool, typer.Option("--no-gpu", help="Do not ask the hosts for their GPUs' use (no SSH).")
    ] = False,
) -> None:
    """Active tunnels: URL, ports, host, uptime, health, and the GPUs' use now."""
    from colabtunnel.commands import status as cmd

    records = _run(lambda: cmd.status(profile), json_command="status" if json_out else None)
    ended = cmd.ended_notes(profile)
    use = {} if no_gpu else cmd.gpu_use(records)
    jobs = cmd.job_details(records)
    idle = cmd.idle(records)
    now = time.time()
    if json_out:
        tunnels = [
            {
                **r.public(),
                "gpu_use": cmd.gpu_use_json(use.get(r.profile)),
                "job": jobs.get(r.profile),
                "activity": idle[r.profile].to_json(now) if r.profile in idle else None,
            }
            for r in records
        ]
        output.emit_json(
            "status", ok=True, tunnels=tunnels, ended=[cmd.ended_json(n) for n in ended]
        )
        return
    _print_ended(ended)
    if not records:
        if not ended:
            print("no tunnels are up", file=sys.stderr)
        return
    print(f"{'PROFILE':<14} {'HEALTH':<13} {'UPTIME':>7}  {'LOCAL':>5} {'REMOTE':>6}  HOST / URL")
    for r in records:
        print(
            f"{r.profile:<14} {r.health_text():<13} {output.duration(_age(r)):>7}  "
            f"{r.local_port:>5} {r.remote_port:>6}  {r.host}"
        )
        print(f"{'':<14} {r.url}")
        for line in cmd.job_lines(jobs[r.profile]) if r.profile in jobs else []:
            print(f"{'':<14} {line}")
        if r.profile in idle:
            print(f"{'':<14} {idle[r.profile].line(now)}")
        if r.profile in use:
            for line in use[r.profile].lines(output.where(r.host)):
                print(f"{'':<14} {line}")


def _print_ended(notes: list[Any]) -> None:
    for note in notes:
        ago = output.duration(time.time() - note.at)
        print(
            f"{note.profile:<14} {note.text()}, {ago} ago; `colabtunnel up {note.profile}` starts a new one"
        )


@app.command()
def url(
    profile: ProfileArg, copy: CopyOpt = False, open_: OpenOpt = False, quiet: QuietOpt = False
) -> None:
    """Print only the URL (and, if asked, copy it and open Colab)."""
    from colabtunnel.commands import url as cmd

    found = _run(lambda: cmd.url(profile))
    print(found, flush=True)
    _Handoff(copy=copy, open_=open_, quiet=quiet).give(found)


@app.command(short_help="Check and trust a host key (and its jump hosts).")
def trust(
    profile: ProfileArg,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
) -> None:
    """Fetch the host key, show its fingerprint, ask, add it to known_hosts."""
    from colabtunnel.commands import trust as cmd

    def confirm(question: str) -> bool:
        if yes:
            print(question + " yes (--yes)", file=sys.stderr)
            return True
        if not sys.stdin.isatty():
            raise ColabtunnelError(
                "not a terminal: cannot ask", hint="pass --yes to trust without asking"
            )
        return typer.confirm(question, default=False)

    for key in _run(lambda: cmd.trust(profile, confirm, output.TerminalPrompter())):
        if key.already_known:
            print(f"{key.name} is already trusted ({key.key_type} {key.fingerprint})")
        else:
            print(f"added {key.name} ({key.key_type} {key.fingerprint}) to {key.known_hosts}")


@app.command()
def logs(
    profile: ProfileArg,
    follow: Annotated[
        bool, typer.Option("-f", "--follow", help="Keep printing new lines.")
    ] = False,
    lines: Annotated[int, typer.Option("-n", "--lines", min=0, help="How many last lines.")] = 50,
) -> None:
    """The remote Jupyter's log (tokens masked)."""
    from colabtunnel.commands import logs as cmd

    _run(
        lambda: cmd.logs(
            profile, lines, follow, print, output.Progress(quiet=True), output.TerminalPrompter()
        )
    )


@app.command()
def doctor(profile: ProfileArg, json_out: JsonOpt = False) -> None:
    """Pre-flight checks, each with pass/fail and the fix. Starts nothing."""
    from colabtunnel.commands import doctor as cmd

    report = _run(
        lambda: cmd.doctor(profile, output.TerminalPrompter()),
        json_command="doctor" if json_out else None,
    )
    if json_out:
        output.emit_json("doctor", **report.to_dict())
    else:
        marks = {"pass": "ok  ", "fail": "FAIL", "warn": "warn", "skip": "skip"}
        for finding in report.findings:
            print(f"{marks[finding.status]}  {finding.name:<22} {finding.detail}")
            if finding.fix and finding.status != "pass":
                print(f"      {'':<22} fix: {finding.fix}")
    if not report.ok:
        raise typer.Exit(EXIT_RUNTIME)


secret_app = typer.Typer(help="The SSH password or key passphrase, in the OS keyring.")
app.add_typer(secret_app, name="secret")
PassphraseOpt = Annotated[
    bool, typer.Option("--passphrase", help="The identity file's passphrase, not the password.")
]


@secret_app.command("set")
def secret_set(profile: ProfileArg, passphrase: PassphraseOpt = False) -> None:
    """Store it (asked on the terminal, or one line read from stdin)."""
    from colabtunnel.commands import secret as cmd

    what = "key passphrase" if passphrase else "SSH password"
    if sys.stdin.isatty():
        import getpass

        value: str | None = getpass.getpass(f"{what} for {profile}: ")
    else:
        value = sys.stdin.readline().rstrip("\r\n")
    _run(lambda: cmd.set_secret(profile, passphrase, value))
    print(f"stored the {what} for {profile} in the keyring", file=sys.stderr)


@secret_app.command("delete")
def secret_delete(profile: ProfileArg, passphrase: PassphraseOpt = False) -> None:
    """Remove it from the keyring."""
    from colabtunnel.commands import secret as cmd

    removed = _run(lambda: cmd.delete_secret(profile, passphrase))
    print("removed" if removed else "nothing was stored", file=sys.stderr)


profiles_app = typer.Typer(help="Manage the saved profiles.", no_args_is_help=True)
app.add_typer(profiles_app, name="profiles")


@profiles_app.command("path")
def profiles_path() -> None:
    """Print where profiles.toml is read from."""
    from colabtunnel.commands import profiles as cmd

    print(cmd.profiles_path())


@profiles_app.command("list")
def profiles_list(json_out: JsonOpt = False) -> None:
    """List the profiles (the built-in `local` included)."""
    from colabtunnel.commands import profiles as cmd

    found = _run(cmd.list_profiles, json_command="profiles" if json_out else None)
    if json_out:
        output.emit_json("profiles", ok=True, profiles=[cmd.as_dict(p) for p in found])
        return
    for profile in found:
        where = "built-in" if profile.source is None else profile.host
        print(f"{profile.name:<16} {where}")


@profiles_app.command("show")
def profiles_show(name: ProfileArg, json_out: JsonOpt = False) -> None:
    """Show one profile's settings and the SSH route they resolve to."""
    from colabtunnel.commands import profiles as cmd

    profile = _run(lambda: cmd.show(name), json_command="profile" if json_out else None)
    route = cmd.route(profile)
    if json_out:
        data = cmd.as_dict(profile)
        data["ssh"] = route.ssh if route else None
        if route and route.error:
            data["ssh_error"] = {"message": route.error, "hint": route.hint}
        output.emit_json("profile", ok=True, profile=data)
        return
    for key, value in cmd.as_dict(profile).items():
        if value not in (None, {}, []):
            print(f"{key:<14} {value}")
    if route is None:
        return
    if route.ssh is None:
        print(f"{'route':<14} cannot be resolved: {route.error}")
        return
    ssh = route.ssh
    print(f"{'route':<14} {ssh['route']}")
    print(f"{'resolved by':<14} {ssh['resolver']}: {ssh['user']}@{ssh['hostname']}:{ssh['port']}")


@profiles_app.command("add")
def profiles_add(
    name: Annotated[str, typer.Argument(help="New profile name.")],
    host: Annotated[
        str | None,
        typer.Option(help="Host name, IP, ssh_config alias, or `local`; asked when left out."),
    ] = None,
    user: Annotated[str | None, typer.Option(help="SSH user.")] = None,
    port: Annotated[int | None, typer.Option(help="SSH port.")] = None,
    identity_file: Annotated[str | None, typer.Option(help="Private key file.")] = None,
    jump: Annotated[str | None, typer.Option(help="ProxyJump chain user@host:port,...")] = None,
    app_: Annotated[str | None, typer.Option("--app", help="auto|notebook|lab|server")] = None,
    activate: Annotated[str | None, typer.Option(help="Shell line run before jupyter.")] = None,
    workdir: Annotated[str | None, typer.Option(help="Notebook root on the host.")] = None,
    replace: Annotated[bool, typer.Option("--replace", help="Overwrite an existing one.")] = False,
) -> None:
    """Add a profile to profiles.toml (comments in the file are kept).

    Without --host, on a terminal: asks for the host (offering the Host aliases of ~/.ssh/config)
    and the activation line, then offers to run `doctor`."""
    from colabtunnel.commands import profiles as cmd

    values: dict[str, Any] = dict(
        host=host,
        user=user,
        port=port,
        identity_file=identity_file,
        jump=jump,
        app=app_,
        activate=activate,
        workdir=workdir,
    )
    asked = host is None
    if asked:
        values |= _run(lambda: cmd.ask_profile(_ask_line, _say, sys.stdin.isatty()))
    path = _run(lambda: cmd.add(name, values, replace=replace))
    print(f"added profile {name} to {path}", file=sys.stderr)
    if asked and _yes(f"run `colabtunnel doctor {name}` now?"):
        doctor(name, json_out=False)


def _ask_line(question: str) -> str | None:
    """One answer typed on the terminal; None when there is no terminal (or input ends)."""
    return output.TerminalPrompter().ask(question, True)


def _say(line: str) -> None:
    print(line, file=sys.stderr)


def _yes(question: str) -> bool:
    answer = _ask_line(f"{question} [Y/n] ")
    return answer is not None and answer.strip().lower() in ("", "y", "yes")


@profiles_app.command("import")
def profiles_import(
    aliases: Annotated[
        list[str] | None,
        typer.Argument(help="Host aliases of ~/.ssh/config to import; none = choose from a list."),
    ] = None,
    all_: Annotated[bool, typer.Option("--all", help="Import every alias.")] = False,
) -> None:
    """One minimal profile (host = ALIAS) per concrete Host alias of ~/.ssh/config."""
    from colabtunnel.commands import profiles as cmd

    found = _run(cmd.ssh_aliases_or_fail)
    if all_:
        chosen = found
    elif aliases:
        chosen = _run(lambda: cmd.chosen_aliases(aliases, found))
    else:
        chosen = _run(lambda: cmd.pick_aliases(found, _ask_line, _say, sys.stdin.isatty()))
    result = _run(lambda: cmd.import_aliases(chosen))
    for alias, why in result.skipped:
        print(f"skipped {alias}: {why}", file=sys.stderr)
    for alias in result.added:
        print(f"added profile {alias} (host = {alias}) to {result.path}", file=sys.stderr)
    if not result.added:
        print("no profile was added", file=sys.stderr)


@profiles_app.command("remove")
def profiles_remove(name: ProfileArg) -> None:
    """Remove a profile from profiles.toml."""
    from colabtunnel.commands import profiles as cmd

    path = _run(lambda: cmd.remove(name))
    print(f"removed profile {name} from {path}", file=sys.stderr)


def main() -> None:
    from typer import Abort
    from typer._click.exceptions import NoArgsIsHelpError, UsageError

    from colabtunnel import usage_errors

    if sys.platform == "win32":
        import signal

        # Ctrl-Break ends a command as Ctrl-C does (by default it kills the process outright,
        # which would leave a half-started Jupyter behind)
        signal.signal(signal.SIGBREAK, signal.default_int_handler)
    try:
        # Not standalone: click would print its own `Usage:` block for what it rejects.
        code = app(standalone_mode=False, prog_name=usage_errors.PROGRAM)
    except NoArgsIsHelpError as exc:
        code = usage_errors.show_help_instead(exc)
    except UsageError as exc:
        code = usage_errors.render(exc, sys.argv[1:])
    except Abort:
        print("aborted", file=sys.stderr)
        code = EXIT_RUNTIME
    except KeyboardInterrupt:
        code = EXIT_INTERRUPTED
    sys.exit(code if isinstance(code, int) else 0)


__all__ = ["EXIT_CONFIG", "app", "main"]
