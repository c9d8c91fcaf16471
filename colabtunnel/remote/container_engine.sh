# shellcheck shell=bash
# Joined after rundir.sh for the container launcher. The profile's engine is a command ("podman",
# "sudo docker"), a bash array here; the container is found by its label, named after it too.
set -u
umask 077
ENGINE=(__CT_ENGINE__)
# shellcheck disable=SC2034  # read by the fragments joined after this one
CT_NAME=colabtunnel-__CT_PROFILE__
CT_LABEL=colabtunnel.profile=__CT_PROFILE__
ct_engine() { "${ENGINE[@]}" "$@"; }
ct_result() { printf '\n%s %s\n' "__COLABTUNNEL_RESULT__" "$1"; }
ct_fail() { ct_result "{\"ok\": false, \"stage\": \"$1\"}"; exit 0; }
ct_fact() { printf '\n%s %s=%s\n' "__COLABTUNNEL_FACT__" "$1" "$2"; }
command -v "${ENGINE[0]}" >/dev/null 2>&1 || ct_fail engine-missing
# The container of this profile (running or not): its ID and state ("running", "exited": the
# State.Status both engines report; `ps --format {{.State}}` is "Up 2 minutes" in Podman 4),
# or nothing.
ct_container() {
  local cid
  cid=$(ct_engine ps -aq --filter "label=$CT_LABEL" 2>/dev/null | head -n 1)
  [ -n "$cid" ] || return 0
  printf '%s %s\n' "$cid" "$(ct_engine inspect -f '{{.State.Status}}' "$cid" 2>/dev/null)"
}
