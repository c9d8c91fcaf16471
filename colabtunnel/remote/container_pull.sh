# shellcheck shell=bash
# Joined after rundir.sh, started.sh and container_engine.sh. Pulls the image, its output passed
# on line by line (the laptop shows the last as progress). The pull runs in a session of its own
# whose PID, with its start time, is in the run directory: `down` or an interrupted `up` stops
# it there (container_stop.sh), and a line written every second notices a closed channel.
{ mkdir -p "$RUN_DIR" && chmod 700 "$RUN_DIR"; } || ct_fail rundir
IMAGE=__CT_IMAGE__
if command -v setsid >/dev/null 2>&1; then CT_SETSID=setsid; else CT_SETSID=; set -m; fi
# shellcheck disable=SC2086  # CT_SETSID is empty or one word
$CT_SETSID "${ENGINE[@]}" pull "$IMAGE" >"$RUN_DIR/pull.log" 2>&1 </dev/null &
PULL=$!
printf '%s\n' "$PULL" >"$RUN_DIR/pull.pid"
ct_started "$PULL" >"$RUN_DIR/pull.started"
trap 'kill -TERM -- "-$PULL" 2>/dev/null; kill -TERM "$PULL" 2>/dev/null' PIPE HUP TERM
shown=0
while kill -0 "$PULL" 2>/dev/null; do
  lines=$(wc -l <"$RUN_DIR/pull.log")
  if [ "$lines" -gt "$shown" ]; then
    tail -n +"$((shown + 1))" "$RUN_DIR/pull.log" | head -n "$((lines - shown))"
    shown=$lines
  else
    printf '\n'  # nothing new: a blank line, so that a channel closed meanwhile is noticed
  fi
  sleep 1
done
wait "$PULL"
code=$?
tail -n +"$((shown + 1))" "$RUN_DIR/pull.log"
rm -f "$RUN_DIR/pull.pid" "$RUN_DIR/pull.started"
ct_result "{\"ok\": $([ "$code" = 0 ] && echo true || echo false), \"exit\": $code}"
