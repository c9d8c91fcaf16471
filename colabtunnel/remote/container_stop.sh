# shellcheck shell=bash
# Joined after rundir.sh, started.sh and container_engine.sh. Stops a pull under way (an image
# that arrives after this must start nothing), then this profile's container (stop, then
# remove: its log goes with it), and removes the run directory (the token).
# A start on its way (an interrupted `up`) holds the lock until the container's ID is on disk.
if [ -d "$RUN_DIR" ] && command -v flock >/dev/null 2>&1; then
  exec 9>>"$RUN_DIR/.lock"; flock -w 120 9
fi
PULL=$(cat "$RUN_DIR/pull.pid" 2>/dev/null)
PULL_STARTED=$(cat "$RUN_DIR/pull.started" 2>/dev/null)
case "$PULL" in
  ''|*[!0-9]*) ;;
  *)
    if [ -n "$PULL_STARTED" ] && [ "$(ct_started "$PULL")" = "$PULL_STARTED" ]; then
      kill -TERM -- "-$PULL" 2>/dev/null || kill -TERM "$PULL" 2>/dev/null
      i=0
      while kill -0 "$PULL" 2>/dev/null && [ "$i" -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
      kill -KILL -- "-$PULL" 2>/dev/null
    fi
    ;;
esac
was_running=false
for CID in $(ct_engine ps -aq --filter "label=$CT_LABEL" 2>/dev/null); do
  [ "$(ct_engine inspect -f '{{.State.Running}}' "$CID" 2>/dev/null)" = true ] && was_running=true
  ct_engine stop -t __CT_GRACE__ "$CID" >/dev/null 2>&1
  ct_engine rm -f "$CID" >/dev/null 2>&1
done
rm -rf "$RUN_DIR" "$RUN_DIR.ended"
ct_result "{\"ok\": true, \"was_running\": $was_running}"
