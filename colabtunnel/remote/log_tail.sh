# shellcheck shell=bash
# Joined after rundir.sh: the last lines of the profile's Jupyter log, and with -F new ones too.
[ -f "$RUN_DIR/jupyter.log" ] || { echo "no Jupyter log for this profile on the host" >&2; exit 3; }
# shellcheck disable=SC2086  # __CT_FOLLOW__ is empty or -F
exec tail -n __CT_LINES__ __CT_FOLLOW__ "$RUN_DIR/jupyter.log"
