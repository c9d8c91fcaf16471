#!/bin/bash
# shellcheck disable=SC2317  # the lines after a failed step run only when it fails
# A colabtunnel session (a Colab runtime) for profile __CT_PROFILE_NAME__. No secret is in this
# script: the token is in a 0600 file of the session directory, read by the launcher.
SESSION=__CT_SESSION__
umask 077
event() { printf '%s %s\n' "$(date +%s)" "$*" >>"$SESSION/events"; }
cd __CT_WORKDIR__ || { event exit "workdir missing"; exit 1; }
{
__CT_ACTIVATE__
} >"$SESSION/activate.out" 2>&1 </dev/null || { event exit "activate failed"; exit 1; }
# exec: the launcher gets the batch shell's signals (the time-limit warning, scancel's TERM)
exec __CT_PYTHON__ "$SESSION/launch.py" "$SESSION"
