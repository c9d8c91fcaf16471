# shellcheck shell=sh
# The start of what runs inside a container (`sh -s`, or its command: an image may have no
# bash), before jupyter_python.sh and a host Python file run with the container's own Python.
set -u
umask 077
ct_result() { printf '\n%s %s\n' "__COLABTUNNEL_RESULT__" "$1"; }
ct_fail() { ct_result "{\"ok\": false, \"stage\": \"$1\"}"; exit 0; }
