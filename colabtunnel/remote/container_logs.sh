# shellcheck shell=bash
# Joined after rundir.sh and container_engine.sh. The container's log (`ENGINE logs`), its last
# lines and, followed, new ones; exit status 3 when there is no container.
read -r CID _ <<<"$(ct_container)"
[ -n "${CID:-}" ] || exit 3
# shellcheck disable=SC2086  # follow: empty or one word
exec "${ENGINE[@]}" logs --tail __CT_LINES__ __CT_FOLLOW__ "$CID" 2>&1
