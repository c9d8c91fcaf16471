# shellcheck shell=bash
# Joined after slurm_session.sh: what the queue, the job's connection file and its own event
# file say, in sections; and the token, when asked (re-attaching to a live session).
JOB=$(cat "$SESSION/job" 2>/dev/null)
printf '%s\n' "@@job" "${JOB%%;*}"
printf '%s\n' "@@squeue"
SQUEUE_STATUS=0
LISTED=
if [ -n "$JOB" ]; then
  # a scheduler that does not answer is "unknown", not a reason to wait on it for long
  LIMIT=; command -v timeout >/dev/null 2>&1 && LIMIT="timeout __CT_SQUEUE_LIMIT__"
  LISTED=$($LIMIT squeue -h -t all -j "${JOB%%;*}" -o __CT_FORMAT__ 2>&1) || SQUEUE_STATUS=$?
  printf '%s\n' "$LISTED"
fi
printf '%s\n' "@@squeue-status" "$SQUEUE_STATUS"
printf '%s\n' "@@sacct"
# gone from squeue (after MinJobAge): accounting, where the site keeps it, says how it ended
if [ -n "$JOB" ] && [ "$SQUEUE_STATUS" = 0 ] && [ -z "$LISTED" ]; then
  $LIMIT sacct -j "${JOB%%;*}" -X -n -P -o __CT_SACCT_FIELDS__ 2>/dev/null
fi
printf '%s\n' "@@conn"
cat "$SESSION/conn.json" 2>/dev/null
printf '\n%s\n' "@@gpus"
cat "$SESSION/gpus.json" 2>/dev/null
printf '\n%s\n' "@@events"
tail -n 50 "$SESSION/events" 2>/dev/null
WITH_TOKEN=__CT_WITH_TOKEN__
if [ "$WITH_TOKEN" = yes ]; then
  printf '\n%s\n' "@@token"
  cat "$SESSION/token" 2>/dev/null
fi
printf '\n%s\n' "@@end"
