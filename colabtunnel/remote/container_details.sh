# shellcheck shell=bash
# Joined after rundir.sh and container_engine.sh. For `status`: this profile's container, its
# state, when it was started (container_start.sh noted it) and the host's clock now.
read -r CID STATE <<<"$(ct_container)"
ct_fact container "${CID:-}"
ct_fact state "${STATE:-}"
ct_fact started "$(cat "$RUN_DIR/started" 2>/dev/null)"
ct_fact now "$(date +%s)"
ct_result '{"ok": true}'
