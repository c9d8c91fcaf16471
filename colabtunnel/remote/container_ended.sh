# shellcheck shell=bash
# Joined after rundir.sh, idle_line.sh and container_engine.sh. Why this profile's Jupyter
# ended, once its port refuses: "idle" when its log says it ended itself for having nothing to
# do. Jupyter is the container's command, so the container has stopped with it.
read -r CID _ <<<"$(ct_container)"
ended=null
if [ -n "${CID:-}" ] && [ -d "$RUN_DIR" ]; then
  ct_engine logs "$CID" >"$RUN_DIR/jupyter.log" 2>&1
  ct_idle_logged "$RUN_DIR/jupyter.log" && ended='"idle"'
  rm -f "$RUN_DIR/jupyter.log"
fi
ct_result "{\"ended\": $ended}"
