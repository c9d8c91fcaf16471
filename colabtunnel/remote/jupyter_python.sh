# shellcheck shell=sh
# Joined after preamble.sh on a host, and run inside a container by sh (container_inside.sh):
# POSIX sh. Sets JPATH (the profile's `jupyter`) and PY (the Python behind it), or ct_fail.
JUPYTER=__CT_JUPYTER__
JPATH=$(command -v "$JUPYTER") || ct_fail jupyter-missing
# The Python that runs this jupyter: its shebang (pip writes a /bin/sh trampoline for long paths).
PY=$(head -n 1 "$JPATH" 2>/dev/null | sed -n 's/^#![[:space:]]*//p')
case "$PY" in
  */env\ *) PY=$(command -v "${PY##* }") ;;
  /bin/sh*) PY=$(sed -n '2p' "$JPATH" | cut -d'"' -f2) ;;
esac
[ -n "$PY" ] && [ -x "${PY%% *}" ] || PY=$(command -v python3) || ct_fail python-missing
PY=${PY%% *}
