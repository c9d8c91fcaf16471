# shellcheck shell=bash
# Joined after rundir.sh and started.sh. Stops the server's process group and every descendant (kernels run in
# sessions of their own), TERM then KILL, and removes the run directory (it holds the token).
set -u
ct_result() { printf '\n%s %s\n' "__COLABTUNNEL_RESULT__" "$1"; }
# A start still on its way (an interrupted `up`) holds this lock until its PID is written.
if [ -d "$RUN_DIR" ] && command -v flock >/dev/null 2>&1; then
  exec 9>>"$RUN_DIR/.lock"; flock -w 120 9
fi
PID=$(cat "$RUN_DIR/jupyter.pid" 2>/dev/null)
STARTED=$(cat "$RUN_DIR/jupyter.started" 2>/dev/null)
ours() {  # is $PID still the process start.sh launched?
  kill -0 "$PID" 2>/dev/null || return 1
  if [ -n "$STARTED" ]; then [ "$(ct_started "$PID")" = "$STARTED" ]; return; fi
  # A run directory from before start times were recorded: its command line, never cut short.
  ps -ww -p "$PID" -o args= 2>/dev/null | grep -q jupyter
}
rm -f "$RUN_DIR.ended"
case "$PID" in ''|*[!0-9]*) rm -rf "$RUN_DIR"; ct_result '{"ok": true, "was_running": false}'; exit 0;; esac
if ! ours; then
  rm -rf "$RUN_DIR"; ct_result '{"ok": true, "was_running": false}'; exit 0
fi
tree() {
  ps -eo pid=,ppid= | awk -v root="$1" '
    { parent[$1] = $2 }
    END {
      keep[root] = 1; grew = 1
      while (grew) { grew = 0; for (p in parent) if (!(p in keep) && (parent[p] in keep)) { keep[p] = 1; grew = 1 } }
      for (p in keep) print p
    }'
}
PIDS=$(tree "$PID")
kill -TERM -- "-$PID" 2>/dev/null
# shellcheck disable=SC2086  # a list of PIDs
kill -TERM $PIDS 2>/dev/null
GRACE_TICKS=__CT_GRACE_TICKS__  # tenths of a second
i=0
left=
while [ "$i" -lt "$GRACE_TICKS" ]; do
  left=
  for p in $PIDS; do kill -0 "$p" 2>/dev/null && left="$left $p"; done
  [ -z "$left" ] && break
  sleep 0.1; i=$((i + 1))
done
killed=false
# shellcheck disable=SC2086  # a list of PIDs
if [ -n "$left" ]; then kill -KILL -- "-$PID" 2>/dev/null; kill -KILL $left 2>/dev/null; killed=true; fi
rm -rf "$RUN_DIR"
ct_result "{\"ok\": true, \"was_running\": true, \"killed\": $killed}"
