# shellcheck shell=bash
# Joined after rundir.sh, before jupyter_python.sh. The run directory, the lock, `activate` and
# `workdir`, or a JSON reason (the failed stage) and exit.
set -u
umask 077
ct_result() { printf '\n%s %s\n' "__COLABTUNNEL_RESULT__" "$1"; }
ct_fail() { ct_result "{\"ok\": false, \"stage\": \"$1\"}"; exit 0; }
{ mkdir -p "$RUN_DIR" && chmod 700 "$RUN_DIR"; } || ct_fail rundir
__CT_LOCK__
# An `activate` line may itself call `exit` (a failing conda hook does): the EXIT trap still
# reports the stage and its output, through the script's own stdout/stderr kept on fds 3 and 4.
exec 3>&1 4>&2
ct_activate_failed() { cat "$RUN_DIR/activate.out" >&4; ct_result '{"ok": false, "stage": "activate"}' >&3; }
trap ct_activate_failed EXIT
{
__CT_ACTIVATE__
} >"$RUN_DIR/activate.out" 2>&1 </dev/null || exit 0
trap - EXIT
exec 3>&- 4>&-
cd __CT_WORKDIR__ 2>/dev/null || ct_fail workdir
