# shellcheck shell=bash
# Joined after slurm_session.sh and idle_line.sh: cancel the session's job, wait until Slurm has it gone (its
# processes stopped on the node), and remove the session directory (the token, the keys).
# A scheduler that does not answer is said so ("answered": false, its words under @@scheduler):
# a job it was not told to cancel may still start, and the caller must not say it was cancelled.
JOB=__CT_JOB__
LIMIT_S=__CT_SCHEDULER_LIMIT__
LIMIT=; command -v timeout >/dev/null 2>&1 && LIMIT="timeout $LIMIT_S"
was=false
answered=true
said=
queued() {  # 0: listed, 1: not listed, 2: the scheduler did not answer (its words in $said)
  local out
  if out=$($LIMIT squeue -h -j "$JOB" -o %i 2>&1); then
    [ -n "$out" ] && return 0
    return 1
  fi
  case $out in
    *"Invalid job id"*) return 1 ;;  # long gone (past MinJobAge)
  esac
  said=${out##*$'\n'}
  [ -n "$said" ] || said="squeue gave no answer in $LIMIT_S s"
  return 2
}
if [ -n "$JOB" ]; then
  queued; listed=$?
  if [ "$listed" = 2 ]; then
    answered=false
    # scancel may still get through (a controller that just came back, a backup controller)
    if cancel_out=$($LIMIT scancel "$JOB" 2>&1); then
      answered=true
      was=true
    else
      case $cancel_out in
        *"Invalid job id"*) answered=true ;;
        *) said=${cancel_out##*$'\n'} ;;
      esac
    fi
  elif [ "$listed" = 0 ]; then
    was=true
    # Jupyter ended itself (idle_timeout): the job is on its way to COMPLETED, and a cancel in
    # those last seconds would make it CANCELLED. It gets the time to end by itself first.
    if ct_idle_logged "$SESSION/jupyter.log"; then
      i=0
      settle=__CT_SETTLE_TICKS__  # half seconds
      while [ "$i" -lt "$settle" ] && queued; do
        sleep 0.5; i=$((i + 1))
      done
    fi
    queued; [ $? = 1 ] || scancel "$JOB" 2>/dev/null
  fi
  if [ "$was" = true ]; then
    i=0
    ticks=__CT_WAIT_TICKS__  # half seconds
    while [ "$i" -lt "$ticks" ] && queued; do
      sleep 0.5; i=$((i + 1))
    done
  fi
fi
gone=true
if [ "$answered" = false ]; then
  gone=false
elif [ -n "$JOB" ]; then
  queued; [ $? = 1 ] || gone=false
fi
rm -rf "$SESSION"
ct_result "{\"ok\": true, \"was_running\": $was, \"gone\": $gone, \"answered\": $answered}"
printf '%s\n' "@@scheduler" "$said"
