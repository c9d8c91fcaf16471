# shellcheck shell=bash
# Joined after start.sh when the profile sets idle_timeout. Jupyter ends itself once it has had
# nothing to do for that long (flavours.idle_args); this watcher, detached like Jupyter, then
# removes the run directory (the token goes with it) and leaves "$RUN_DIR.ended", which says when
# and holds no secret, for the keeper. A Jupyter stopped by `down` or dead of a crash logs no such
# line: that one is left to stop.sh and to the keeper's remote-dead.
CT_STARTED=$(cat "$RUN_DIR/jupyter.started" 2>/dev/null)
ct_watch() {
  while [ -n "$CT_STARTED" ] && [ "$(ct_started "$CT_PID")" = "$CT_STARTED" ]; do sleep 2; done
  ct_idle_logged "$RUN_DIR/jupyter.log" || return 0
  if command -v flock >/dev/null 2>&1; then exec 9>>"$RUN_DIR/.lock"; flock -w 60 9; fi
  date +%s >"$RUN_DIR.ended"
  rm -rf "$RUN_DIR"
}
# No SIGHUP when the SSH session ends, and no fd of the session kept open (it would hold the
# channel open until Jupyter ends).
(trap '' HUP; ct_watch) </dev/null >/dev/null 2>&1 &
