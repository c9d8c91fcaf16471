# shellcheck shell=bash
# The host's run directory of one profile (Jupyter's PID, port, token, log): defined here only.
# shellcheck disable=SC2034  # read by the fragments joined after this one
RUN_DIR="${XDG_STATE_HOME:-$HOME/.local/state}/colabtunnel/"__CT_PROFILE__
