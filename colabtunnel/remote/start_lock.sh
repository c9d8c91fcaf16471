# shellcheck shell=bash
# Held by start.sh from before `activate` until Jupyter's PID is on disk, so that a stop sent by
# an interrupted `up` can never miss a server that is still being launched.
if command -v flock >/dev/null 2>&1; then exec 9>>"$RUN_DIR/.lock"; flock 9; fi
