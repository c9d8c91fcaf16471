# shellcheck shell=bash
# Joined before idle_watch.sh and ended.sh. The line every flavour logs just before it exits for
# having had nothing to do (jupyter_server: "No kernels for N seconds."; Notebook 6: "No kernels
# or terminals for N seconds; shutting down.").
ct_idle_logged() { grep -qE 'No kernels( or terminals)? for [0-9]+ seconds' "$1" 2>/dev/null; }
