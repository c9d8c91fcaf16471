# shellcheck shell=bash
# Joined after rundir.sh and idle_line.sh. Asked by the keeper when Jupyter's port
# refuses: did Jupyter end itself for having nothing to do ("idle"), or is that not known (a crash,
# a kill: null)? Reads what idle_watch.sh left or, before the watcher has seen the exit, Jupyter's
# log: the port closes while the process is still on its way out, so the line counts, not the PID.
set -u
ct_result() { printf '\n%s %s\n' "__COLABTUNNEL_RESULT__" "$1"; }
if [ -f "$RUN_DIR.ended" ]; then
  AT=$(head -c 20 "$RUN_DIR.ended" | tr -cd 0-9)
  ct_result "{\"ended\": \"idle\", \"at\": ${AT:-null}}"
elif ct_idle_logged "$RUN_DIR/jupyter.log"; then
  ct_result '{"ended": "idle", "at": null}'
else
  ct_result '{"ended": null}'
fi
