# shellcheck shell=bash
# Joined before start.sh and stop.sh. A PID alone does not name a process: after a reboot or a
# long uptime another process may hold it. A PID with its start time does, and neither is cut
# short the way a listing of command lines is (`ps` trims `args` to $COLUMNS when that is set).
ct_started() {  # PID -> its start time (clock ticks since boot, or ps's lstart); nothing if gone
  local stat
  if stat=$(cat "/proc/$1/stat" 2>/dev/null); then
    # shellcheck disable=SC2086  # split into the fields after "PID (command) "
    set -- ${stat##*) }
    printf '%s\n' "${20}"
  else
    ps -ww -o lstart= -p "$1" 2>/dev/null
  fi
}
