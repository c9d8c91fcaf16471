# shellcheck shell=bash
# Joined after slurm_session.sh: the job's output and Jupyter's log (with -F, new lines too).
[ -d "$SESSION" ] || { echo "no session for this profile on the login node" >&2; exit 3; }
# shellcheck disable=SC2086  # __CT_FOLLOW__ is empty or -F
exec tail -n __CT_LINES__ __CT_FOLLOW__ "$SESSION/job.out" "$SESSION/jupyter.log" 2>/dev/null
