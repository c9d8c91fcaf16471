# shellcheck shell=bash
# Joined after slurm_session.sh: cancel the session's job, wait until Slurm has it gone (its
# processes stopped on the node), and remove the session directory (the token, the keys).
JOB=__CT_JOB__
was=false
if [ -n "$JOB" ] && squeue -h -j "$JOB" -o %i 2>/dev/null | grep -q .; then
  was=true
  scancel "$JOB" 2>/dev/null
  i=0
  ticks=__CT_WAIT_TICKS__  # half seconds
  while [ "$i" -lt "$ticks" ] && squeue -h -j "$JOB" -o %i 2>/dev/null | grep -q .; do
    sleep 0.5; i=$((i + 1))
  done
fi
gone=true
squeue -h -j "$JOB" -o %i 2>/dev/null | grep -q . && gone=false
rm -rf "$SESSION"
ct_result "{\"ok\": true, \"was_running\": $was, \"gone\": $gone}"
