# shellcheck shell=bash
# Joined after slurm_session.sh: doctor's pre-flight for a cluster profile, one round trip.
tools=
for tool in sbatch squeue scancel srun sinfo; do
  command -v "$tool" >/dev/null 2>&1 && tools="$tools $tool"
done
printf '%s\n' "@@tools" "$tools"
printf '%s\n' "@@partition"
sinfo -h -o '%P %a' 2>&1
printf '%s\n' "@@test-only"
sbatch --test-only __CT_OPTIONS__ --wrap=true 2>&1
printf '%s\n' "@@session-root"
if mkdir -p "$SESSION_ROOT" 2>/dev/null && probe=$(mktemp -d "$SESSION_ROOT/.doctor.XXXXXX" 2>/dev/null); then
  stat -c '%a' "$probe"; rm -rf "$probe"
else
  echo unwritable
fi
printf '%s\n' "@@sshd"
command -v sshd 2>/dev/null || ls /usr/sbin/sshd 2>/dev/null
printf '%s\n' "@@end"
