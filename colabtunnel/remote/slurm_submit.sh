# shellcheck shell=bash
# Joined after slurm_session.sh. Makes the session directory, puts the token (0600), the job's
# description, the in-job launcher and this session's sshd keys in it, then submits the job:
# the batch script goes on sbatch's stdin and holds no secret, and the umask (077) decides the
# mode of the job's output file. This text, the token in it, travels on the SSH channel's stdin.
for tool in sbatch squeue scancel; do
  command -v "$tool" >/dev/null 2>&1 || ct_fail "missing-$tool"
done
mkdir -p "$SESSION_ROOT" || ct_fail session-root
rm -rf "$SESSION"
mkdir -m 700 "$SESSION" || ct_fail session-root
printf '%s' __CT_TOKEN__ >"$SESSION/token"
cat >"$SESSION/job.json" <<'CT_JOB_EOF'
__CT_JOB_JSON__
CT_JOB_EOF
cat >"$SESSION/launch.py" <<'CT_LAUNCH_EOF'
__CT_LAUNCHER__
CT_LAUNCH_EOF
cat >"$SESSION/host_key" <<'CT_KEY_EOF'
__CT_HOST_KEY__
CT_KEY_EOF
printf '%s\n' __CT_AUTHORIZED_KEY__ >"$SESSION/authorized_keys"
cat >"$SESSION/job.sh" <<'CT_BATCH_EOF'
__CT_BATCH_SCRIPT__
CT_BATCH_EOF
cd "$SESSION" || ct_fail session-root
if ! JOB=$(sbatch --parsable __CT_OPTIONS__ <"$SESSION/job.sh" 2>"$SESSION/sbatch.err"); then
  cat "$SESSION/sbatch.err" >&2
  rm -rf "$SESSION"
  ct_fail sbatch
fi
JOB=${JOB##*$'\n'}
printf '%s\n' "$JOB" >"$SESSION/job"
ct_result "{\"ok\": true, \"job\": \"${JOB%%;*}\", \"session\": \"$SESSION\"}"
