# shellcheck shell=sh
# Run inside the container after container_inside.sh and jupyter_python.sh, before wait.py:
# Jupyter's PID (entry.sh notes it; an image's own start-up is PID 1) and the token, read from
# the mounted file into this shell's environment only.
CT_PIDFILE=__CT_PIDFILE__
if [ -n "$CT_PIDFILE" ]; then
  i=0
  while [ ! -s "$CT_PIDFILE" ] && [ "$i" -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
  CT_PID=$(cat "$CT_PIDFILE" 2>/dev/null) || ct_fail exited
else
  # shellcheck disable=SC2034  # read by the wait joined after this
  CT_PID=1
fi
JUPYTER_TOKEN=$(cat /run/colabtunnel/token) || ct_fail token-unreadable
export JUPYTER_TOKEN
JUPYTER_RUNTIME_DIR=/run/jupyter  # where entry.sh has Jupyter keep its runtime files
export JUPYTER_RUNTIME_DIR
