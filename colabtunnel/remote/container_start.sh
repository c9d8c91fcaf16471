# shellcheck shell=bash
# Joined after rundir.sh, container_engine.sh and container_args.sh. Starts this profile's container and waits
# until Jupyter answers in it, one round trip. The token comes in the exports below (this script's
# own text, on stdin) or, for an image that makes its own (start = "image"), from its log; it
# goes to a 0600 file of the 0700 run directory, mounted read-only into the container. Jupyter's
# port is published on the host's 127.0.0.1 only.
{ mkdir -p "$RUN_DIR" && chmod 700 "$RUN_DIR"; } || ct_fail rundir
exec 9>>"$RUN_DIR/.lock"
# Held until the container's ID is on disk; what the engine starts must not inherit it (9>&-):
# its monitor process (conmon) would hold the lock for as long as the container runs.
command -v flock >/dev/null 2>&1 && flock 9
__CT_EXPORTS__
rm -f "$RUN_DIR.ended"
printf '%s' "${JUPYTER_TOKEN:-}" >"$RUN_DIR/token"
unset JUPYTER_TOKEN
printf '%s\n' __CT_CPORT__ >"$RUN_DIR/port"
printf '%s\n' __CT_FLAVOUR__ >"$RUN_DIR/flavour"
cat >"$RUN_DIR/entry.sh" <<'CT_ENTRY_EOF'
__CT_ENTRY__
CT_ENTRY_EOF
ct_engine rm -f "$CT_NAME" >/dev/null 2>&1 9>&-  # one left stopped by an earlier start: the name is ours
date +%s >"$RUN_DIR/started"
if ! CID=$(ct_engine run -d --init --name "$CT_NAME" --label "$CT_LABEL" \
  -p 127.0.0.1:__CT_HOST_PORT__:__CT_CPORT__ -v "$RUN_DIR:/run/colabtunnel:ro,z" \
  --tmpfs /run/jupyter:rw,mode=0700 "${RUN_ARGS[@]}" __CT_COMMAND__ 2>"$RUN_DIR/run.err" 9>&-); then
  tail -n 5 "$RUN_DIR/run.err" >&2
  ct_fail container-run
fi
printf '%s\n' "$CID" >"$RUN_DIR/container"
ct_fact container "$CID"
exec 9>&-
HOSTPORT=$(ct_engine port "$CID" __CT_CPORT__/tcp 2>/dev/null | head -n 1)
ct_fact host_port "${HOSTPORT##*:}"
ct_running() { [ "$(ct_engine inspect -f '{{.State.Running}}' "$CID" 2>/dev/null)" = true ]; }
CT_TOKEN_FROM=__CT_TOKEN_FROM__
CT_TICKS=__CT_TIMEOUT_TICKS__  # half seconds
if [ "$CT_TOKEN_FROM" = log ]; then
  # The image's own start-up prints its URL with the token in it: read here, never shown.
  i=0
  TOKEN=
  while [ -z "$TOKEN" ]; do
    TOKEN=$(ct_engine logs "$CID" 2>&1 | sed -n 's/.*[?&]token=\([0-9A-Za-z_-]*\).*/\1/p' | head -n 1)
    [ -n "$TOKEN" ] && break
    ct_running || ct_fail exited
    [ "$i" -ge "$CT_TICKS" ] && ct_fail token-not-printed
    sleep 0.5
    i=$((i + 1))
  done
  printf '%s' "$TOKEN" >"$RUN_DIR/token"
  ct_fact token "$TOKEN"
fi
ct_running || ct_fail exited
ct_engine exec -i -w "$WORKDIR" "$CID" sh -s <<'CT_IN_EOF' || { ct_running || ct_fail exited; }
__CT_WAIT__
CT_IN_EOF
