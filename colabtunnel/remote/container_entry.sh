# shellcheck shell=sh
# The container's command (sh /run/colabtunnel/entry.sh JUPYTER-ARGS...), after
# container_inside.sh and jupyter_python.sh: Jupyter with the token from the read-only mounted
# file, in its own environment only (never the container's configuration, which
# `ENGINE inspect` shows to every user of the engine), and its PID where the wait finds it.
JUPYTER_TOKEN=$(cat /run/colabtunnel/token) || ct_fail token-unreadable
export JUPYTER_TOKEN
# Jupyter's runtime files (jpserver-PID.json and its -open.html hold the token) on a tmpfs, not
# in the container's filesystem, which lies on the host's disk outside the run directory
JUPYTER_RUNTIME_DIR=/run/jupyter
export JUPYTER_RUNTIME_DIR
echo "$$" >/tmp/colabtunnel-jupyter.pid
exec "$JPATH" "$@"
