# shellcheck shell=bash
# Joined after slurm_session.sh and idle_line.sh. Asked by the keeper when the job's Jupyter is
# gone: did it end itself for having nothing to do (its log, in the session the login node shares
# with the node, says so), which ends the job as COMPLETED?
if ct_idle_logged "$SESSION/jupyter.log"; then
  ct_result '{"ended": "idle"}'
else
  ct_result '{"ended": null}'
fi
