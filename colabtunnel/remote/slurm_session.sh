# shellcheck shell=bash
# The login node's side of one Slurm session: the directory (0700) that the login node and the
# compute node share, under session_root. Defined here only; joined before every slurm_*.sh.
set -u
umask 077
ct_result() { printf '\n%s %s\n' "__COLABTUNNEL_RESULT__" "$1"; }
ct_fail() { ct_result "{\"ok\": false, \"stage\": \"$1\"}"; exit 0; }
SESSION_ROOT=__CT_SESSION_ROOT__
# shellcheck disable=SC2034  # read by the fragments joined after this one
SESSION="$SESSION_ROOT/"__CT_PROFILE__
