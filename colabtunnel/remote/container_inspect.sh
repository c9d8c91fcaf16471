# shellcheck shell=bash
# Joined after rundir.sh, container_engine.sh and container_args.sh. What the host's engine has:
# whether it runs for this user, the image (and its size), this profile's container, its
# published port and recorded token; then the inspection inside the image (inspect.py,
# in a container of its own) or, in a running container, that and whether its Jupyter answers
# with the recorded token. Facts are lines `__COLABTUNNEL_FACT__ name=value`.
# Nothing is written here: a failed `up` must leave no run directory behind.
if ! CT_OUT=$(ct_engine ps -q 2>&1); then
  printf '%s\n' "$CT_OUT" | tail -n 5 >&2
  ct_fail engine-unusable
fi
ct_fact version "$(ct_engine --version 2>/dev/null | head -n 1)"
IMAGE=__CT_IMAGE__
SIZE=$(ct_engine image inspect --format '{{.Size}}' "$IMAGE" 2>/dev/null | head -n 1) || SIZE=
ct_fact image_size "$SIZE"
read -r CID STATE <<<"$(ct_container)"
ct_fact container "${CID:-}"
ct_fact state "${STATE:-}"
if [ "${STATE:-}" = running ]; then
  HOSTPORT=$(ct_engine port "$CID" __CT_CPORT__/tcp 2>/dev/null | head -n 1)
  ct_fact host_port "${HOSTPORT##*:}"
  ct_fact token "$(cat "$RUN_DIR/token" 2>/dev/null)"
  ct_fact flavour "$(cat "$RUN_DIR/flavour" 2>/dev/null)"
  ct_engine exec -i -w "$WORKDIR" "$CID" sh -s <<'CT_IN_EOF' || ct_fail container-exec
__CT_INSIDE_RUNNING__
CT_IN_EOF
elif [ -n "$SIZE" ]; then
  # Published too, on a port the engine picks: proof that it can publish on 127.0.0.1
  ct_engine run --rm -i -p 127.0.0.1::__CT_CPORT__ "${RUN_ARGS[@]}" --entrypoint sh "$IMAGE" -s \
    <<'CT_IN_EOF' || ct_fail container-run
__CT_INSIDE__
CT_IN_EOF
else
  ct_result '{"ok": true, "image": "missing"}'
fi
