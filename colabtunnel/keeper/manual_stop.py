"""When colabtunnel cannot stop a Jupyter itself (the host unreachable, a login refused): why, and
the exact command that stops it, for `down` and for a start-up whose clean-up failed."""

from __future__ import annotations

import shlex

from colabtunnel.profiles import Profile, get_profile


def advice(name: str, why: str) -> str:
    """The warning for a Jupyter that may still run: why, and the exact command that stops it."""
    where = "here" if get_profile(name).is_local else "there"
    return f"{why}; Jupyter for {name} may still run {where}. Stop it with: {command(name)}"


def command(name: str) -> str:
    """The command, run on the laptop, that stops the profile's Jupyter and removes its files."""
    profile = get_profile(name)
    if profile.launcher == "slurm":
        # the job is the session (slurm_job.sh): cancelling it stops Jupyter on the node
        return ssh_command(profile, f'scancel -u "$USER" -n {shlex.quote("colabtunnel-" + name)}')
    if profile.is_local:
        from colabtunnel import launchers

        if launchers.for_profile(profile).NAME == "local":
            from colabtunnel.launchers import local

            return local.stop_command(profile)
    run_dir = f"${{XDG_STATE_HOME:-$HOME/.local/state}}/colabtunnel/{name}"
    if profile.container is not None:
        # the container is named after the profile (remote/container_engine.sh); `rm -f`
        # stops it too, and the run directory holds the token
        engine = shlex.join(profile.container.engine)
        stop = f'{engine} rm -f {shlex.quote("colabtunnel-" + name)} && rm -rf "{run_dir}"'
        return ssh_command(profile, stop)
    stop = f'kill -TERM -- -$(cat "{run_dir}/jupyter.pid") && rm -rf "{run_dir}"'
    return stop if profile.is_local else ssh_command(profile, stop)


def ssh_command(profile: Profile, command: str) -> str:
    """`ssh ... 'command'` that reaches the profile's host the way colabtunnel does (its user,
    port, key and jump hosts; ssh_config supplies the rest, as it does for colabtunnel)."""
    argv = ["ssh"]
    if profile.port:
        argv += ["-p", str(profile.port)]
    if profile.identity_file:
        argv += ["-i", profile.identity_file]
    if profile.jump:
        argv += ["-J", profile.jump]
    argv.append(f"{profile.user}@{profile.host}" if profile.user else profile.host)
    return " ".join([*(shlex.quote(a) for a in argv), shlex.quote(command)])
