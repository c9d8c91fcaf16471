# shellcheck shell=bash
# Joined after the preamble and started.sh. The exports below are `export NAME=value` lines, the token among them:
# this text travels on the SSH channel's stdin only, never on a command line.
__CT_EXPORTS__
rm -f "$RUN_DIR.ended"  # what an earlier server's idle end left, now read or outdated
printf '%s' "$JUPYTER_TOKEN" >"$RUN_DIR/token"
printf '%s\n' __CT_PORT__ >"$RUN_DIR/port"
printf '%s\n' __CT_FLAVOUR__ >"$RUN_DIR/flavour"
: >"$RUN_DIR/jupyter.log"
# Its own session (setsid) or at least its own process group (set -m) so `down` can stop the
# whole group, and nohup so an SSH drop or a sleeping laptop does not hang it up.
if command -v setsid >/dev/null 2>&1; then CT_SETSID=setsid; else CT_SETSID=; set -m; fi
# shellcheck disable=SC2086  # CT_SETSID is empty or one word; the arguments are pre-quoted
nohup $CT_SETSID "$JPATH" __CT_ARGS__ >>"$RUN_DIR/jupyter.log" 2>&1 </dev/null 9>&- &
CT_PID=$!
printf '%s\n' "$CT_PID" >"$RUN_DIR/jupyter.pid"
ct_started "$CT_PID" >"$RUN_DIR/jupyter.started"
exec 9>&-  # the pid is recorded: a stop may run now
