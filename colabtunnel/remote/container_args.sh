# shellcheck shell=bash
# Joined after container_engine.sh by the scripts that run a container. Which engine this is
# (Docker and Podman take GPUs differently: --gpus, or CDI devices), the profile's arguments for
# it, and the workdir, resolved on the host and mounted at the same path.
case "$(ct_engine --version 2>/dev/null)" in
  *odman*) CT_KIND=podman; RUN_ARGS=(__CT_PODMAN_ARGS__) ;;
  *) CT_KIND=docker; RUN_ARGS=(__CT_DOCKER_ARGS__) ;;
esac
ct_fact kind "$CT_KIND"
WORKDIR=$(cd __CT_WORKDIR__ 2>/dev/null && pwd -P) || ct_fail workdir
RUN_ARGS+=(-v "$WORKDIR:$WORKDIR" -w "$WORKDIR")
