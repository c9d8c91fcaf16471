"""The bash and Python text colabtunnel runs on the host. Kept apart so jupyter.py reads as logic.

Everything here is fed to `bash -l -s` on stdin; only `bash -l -s` shows in the host's `ps`.
Each script prints one line `MARKER {json}` as its result, so noise from login files cannot confuse it.
"""

from __future__ import annotations

import shlex

from colabtunnel import gpus

MARKER = "__COLABTUNNEL_RESULT__"

# Sets RUN_DIR, fails with a JSON reason. {activate} and {workdir} are pre-quoted by the caller.
PREAMBLE = r"""
set -u
umask 077
ct_result() { printf '\n%s %s\n' "__COLABTUNNEL_RESULT__" "$1"; }
ct_fail() { ct_result "{\"ok\": false, \"stage\": \"$1\"}"; exit 0; }
RUN_DIR="${XDG_STATE_HOME:-$HOME/.local/state}/colabtunnel/"{profile}
mkdir -p "$RUN_DIR" && chmod 700 "$RUN_DIR" || ct_fail rundir
{lock}
# An `activate` line may itself call `exit` (a failing conda hook does): the EXIT trap still
# reports the stage and its output, through the script's own stdout/stderr kept on fds 3 and 4.
exec 3>&1 4>&2
ct_activate_failed() { cat "$RUN_DIR/activate.out" >&4; ct_result '{"ok": false, "stage": "activate"}' >&3; }
trap ct_activate_failed EXIT
{
{activate}
} >"$RUN_DIR/activate.out" 2>&1 </dev/null || exit 0
trap - EXIT
exec 3>&- 4>&-
cd {workdir} 2>/dev/null || ct_fail workdir
JUPYTER={jupyter}
JPATH=$(command -v "$JUPYTER") || ct_fail jupyter-missing
# The Python that runs this jupyter: its shebang (pip writes a /bin/sh trampoline for long paths).
PY=$(head -n 1 "$JPATH" 2>/dev/null | sed -n 's/^#![[:space:]]*//p')
case "$PY" in
  */env\ *) PY=$(command -v "${PY##* }") ;;
  /bin/sh*) PY=$(sed -n '2p' "$JPATH" | cut -d'"' -f2) ;;
esac
[ -n "$PY" ] && [ -x "${PY%% *}" ] || PY=$(command -v python3) || ct_fail python-missing
PY=${PY%% *}
"""

# Is a PID a live process? A zombie is not (Jupyter's parent on the host may not reap it yet).
ALIVE_PY = r"""
def alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as fh:
            if fh.read().rsplit(")", 1)[1].split()[0] == "Z":
                return False
    except OSError:
        pass
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False
"""

# Everything `up` and `doctor` need to know, in one round trip.
INSPECT_PY = (
    r"""
import glob, json, os, re, shutil, socket, subprocess, sys, time
run_dir, want_port, jupyter, watch = sys.argv[1], int(sys.argv[2]), sys.argv[3], json.loads(sys.argv[4])

def versions(names):
    # What importlib.metadata would answer (the first distribution on sys.path wins), read from
    # the *.dist-info / *.egg-info names: importing importlib.metadata alone costs 0.03-0.05 s.
    want = {re.sub(r"[-_.]+", "_", n).lower(): n for n in names}
    found = dict.fromkeys(names)
    for entry in sys.path:
        try:
            items = sorted(os.listdir(entry or "."))
        except OSError:
            continue
        for item in items:
            stem, dot, kind = item.rpartition(".")
            if kind not in ("dist-info", "egg-info") or "-" not in stem:
                continue
            name, version = stem.split("-")[:2]
            name = want.get(re.sub(r"[-_.]+", "_", name).lower())
            if name is not None and found[name] is None:
                found[name] = version
    return found

def port_free(port):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()

def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port

def read(name):
    try:
        with open(os.path.join(run_dir, name)) as fh:
            return fh.read().strip()
    except OSError:
        return None

"""
    + ALIVE_PY
    + r"""
def existing():
    pid, port, token = read("jupyter.pid"), read("port"), read("token")
    if not (pid and port and token and pid.isdigit() and port.isdigit()):
        return None
    if not alive(int(pid)):
        return {"pid": int(pid), "port": int(port), "alive": False}
    import urllib.request  # only when a previous server may be there: 0.02 s to import
    req = urllib.request.Request("http://127.0.0.1:%s/api/status" % port,
                                 headers={"Authorization": "token " + token})
    try:
        answering = urllib.request.urlopen(req, timeout=5).status == 200
    except Exception:
        answering = False
    return {"pid": int(pid), "port": int(port), "alive": True, "answering": answering,
            "token": token, "flavour": read("flavour")}

"""
    # gpus(): the GPU tools start here, before the rest of the inspection runs beside them.
    + gpus.host_code()
    + r"""
def config_dirs():
    # Where this Jupyter reads config: what `jupyter --paths --json` lists (JUPYTER_CONFIG_DIR or
    # ~/.jupyter, JUPYTER_CONFIG_PATH, the environment's etc/jupyter, the system directories).
    # jupyter_core answers in this interpreter, the one that runs `jupyter`, for 0.02 s; the
    # command itself (0.05 s more) only when it cannot.
    try:
        from jupyter_core.paths import jupyter_config_path
        return jupyter_config_path(), None
    except Exception:
        pass
    try:
        done = subprocess.run([jupyter, "--paths", "--json"], capture_output=True, timeout=30)
        if done.returncode:
            raise OSError("exit %d" % done.returncode)
        return json.loads(done.stdout)["config"], None
    except Exception as exc:
        own = os.environ.get("JUPYTER_CONFIG_DIR") or os.path.expanduser("~/.jupyter")
        return [own], "`jupyter --paths --json` failed (%s): only %s was scanned" % (exc, own)

def config_files(directory):
    py = sorted(glob.glob(os.path.join(directory, "jupyter_*config.py")))
    js = sorted(glob.glob(os.path.join(directory, "jupyter_*config.json")))
    js += sorted(glob.glob(os.path.join(directory, "jupyter_*config.d", "*.json")))
    return py, js

def setting(path, line, section, trait, text, literal, value):
    if trait == "token" and not (literal and value == ""):
        return None  # only an emptied token matters, and no token value leaves the host
    if not isinstance(value, (str, int, float, bool, type(None))):
        literal, value = False, None
    return {"file": path, "line": line, "section": section, "trait": trait,
            "text": text, "literal": literal, "value": value}

def py_settings(path, assign):
    import ast
    found = []
    with open(path, errors="replace") as fh:
        for number, line in enumerate(fh, 1):
            match = assign.match(line)
            if not match:
                continue
            text = match.group(3).strip()
            try:
                literal, value = True, ast.literal_eval(ast.parse(text, mode="eval").body)
            except (SyntaxError, ValueError, TypeError):
                literal, value = False, None
            found.append(setting(path, number, match.group(1), match.group(2), text, literal, value))
    return found

def json_settings(path, sections, traits):
    with open(path, errors="replace") as fh:
        text = fh.read()
    data = json.loads(text)
    lines = text.splitlines()
    found = []
    for section in sections:
        block = data.get(section) if isinstance(data, dict) else None
        if not isinstance(block, dict):
            continue
        # The line: the first naming the trait at or after the first naming its section.
        top = next((i for i, l in enumerate(lines) if '"%s"' % section in l), len(lines))
        for trait in traits:
            if trait in block:
                line = next((i + 1 for i in range(top, len(lines)) if '"%s"' % trait in lines[i]), None)
                value = block[trait]
                found.append(setting(path, line, section, trait, json.dumps(value), True, value))
    return found

def config_settings(watch):
    sections, traits = watch["sections"], watch["traits"]
    assign = re.compile(r"^\s*c\.(%s)\.(%s)\s*=(?!=)(.*)$" % ("|".join(sections), "|".join(traits)))
    dirs, problem = config_dirs()
    found = []
    for directory in dict.fromkeys(dirs):
        py, js = config_files(directory)
        for path in py + js:
            try:
                if path.endswith(".py"):
                    found += py_settings(path, assign)
                else:
                    found += json_settings(path, sections, traits)
            except (OSError, ValueError):
                continue
    return {"dirs": dirs, "problem": problem, "settings": [f for f in found if f]}

names = ("notebook", "jupyterlab", "jupyter_server", "ipykernel", "jupyter_core")
info = {
    "ok": True,
    "python": sys.version.split()[0],
    "python_path": sys.executable,
    "versions": versions(names),
    "uid": os.getuid(),
    "user": os.environ.get("USER") or os.environ.get("LOGNAME"),
    "home": os.path.expanduser("~"),
    "cwd": os.getcwd(),
    "run_dir": run_dir,
    "free_port": free_port(),
    "want_port_free": port_free(want_port) if want_port else None,
    "existing": existing(),
    "gpus": gpus(),
    "config": config_settings(watch),
}
print("\n__COLABTUNNEL_RESULT__ " + json.dumps(info))
"""
)

INSPECT = (
    PREAMBLE
    + r"""
"$PY" - "$RUN_DIR" {want_port} "$JPATH" {watch} <<'CT_PY_EOF'
"""
    + INSPECT_PY
    + r"""
CT_PY_EOF
"""
)

# Wait for the server to answer, then prove it serves Colab's way (plain HTTP, API at the root,
# auth enforced), all on the host, in one round trip. Each way it can fail is a stage of its own:
# only a JSON answer from an API that needs auth means "answered without a token".
WAIT_PY = (
    r"""
import http.client, json, os, socket, sys, time
pid, port, timeout = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
token = os.environ["JUPYTER_TOKEN"]

"""
    + ALIVE_PY
    + r"""
def get(path, auth=False):
    # (status, content type, Location, body); redirects are not followed.
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path, headers={"Authorization": "token " + token} if auth else {})
        resp = conn.getresponse()
        return resp.status, resp.getheader("Content-Type") or "", resp.getheader("Location") or "", resp.read(65536)
    finally:
        conn.close()

def api_json(answer):
    status, kind, _, body = answer
    if not (200 <= status < 300 and "json" in kind):
        return None
    try:
        return json.loads(body)
    except ValueError:
        return None

def ours():
    # Does our Jupyter hold the listening socket? An answer from whatever else took the port
    # (Jupyter then exits: port_retries=0) says nothing about our server. None: cannot tell.
    try:
        sockets = set()
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            with open(table) as fh:
                for row in fh.readlines()[1:]:
                    fields = row.split()
                    if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                        sockets.add("socket:[%s]" % fields[9])
        fds = "/proc/%d/fd" % pid
        return any(os.readlink(os.path.join(fds, fd)) in sockets for fd in os.listdir(fds))
    except OSError:
        return None

def speaks_tls():
    # Jupyter with a certfile drops a plain HTTP request unanswered (its log: "SSL Error ... http
    # request"); a TLS handshake tells that apart from a server still starting.
    import ssl
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            context.wrap_socket(raw).close()
        return True
    except OSError:
        return False

def served_base_url():
    # Where Jupyter says it serves: its runtime file (jpserver-PID.json; nbserver-PID.json on
    # Notebook 6). Only base_url is read from it.
    try:
        from jupyter_core.paths import jupyter_runtime_dir
        for name in ("jpserver-%d.json" % pid, "nbserver-%d.json" % pid):
            path = os.path.join(jupyter_runtime_dir(), name)
            if os.path.exists(path):
                with open(path) as fh:
                    return json.load(fh).get("base_url")
    except Exception:
        pass
    return None

def result(**kw):
    kw["after_s"] = round(time.monotonic() - start, 2)
    print("\n__COLABTUNNEL_RESULT__ " + json.dumps(kw))
    sys.exit(0)

start = time.monotonic()
while True:
    if not alive(pid):
        result(ok=False, stage="exited")
    try:
        api = get("/api")
        if ours() is not False:
            break
    except ConnectionRefusedError:
        pass
    except (http.client.HTTPException, ConnectionError):
        if ours() is not False and speaks_tls():  # accepted, then closed without an answer
            result(ok=False, stage="https")
    except OSError:
        pass
    if time.monotonic() - start > timeout:
        result(ok=False, stage="timeout")
    time.sleep(0.02)  # fixed and short (a refused connect costs ~1 ms): a back-off delays the URL
ready_s = time.monotonic() - start
info = api_json(api)
if not (isinstance(info, dict) and info.get("version")):
    status, kind, location, _ = api
    if status == 404 or 300 <= status < 400:
        result(ok=False, stage="not-root", status=status, location=location, base_url=served_base_url())
    result(ok=False, stage="not-jupyter", status=status, content_type=kind)
anonymous, authed = get("/api/kernelspecs"), get("/api/kernelspecs", auth=True)
if api_json(anonymous) is not None:
    result(ok=False, stage="auth-disabled", status=anonymous[0])
if anonymous[0] not in (401, 403):
    result(ok=False, stage="auth-unclear", status=anonymous[0], content_type=anonymous[1])
if authed[0] in (401, 403):
    result(ok=False, stage="token-rejected", status=authed[0])
if api_json(authed) is None:
    result(ok=False, stage="not-jupyter", status=authed[0], content_type=authed[1])
result(ok=True, ready_s=ready_s)
"""
)

# {exports} holds `export NAME=value` lines, the token among them: this text travels on stdin only.
START = (
    PREAMBLE
    + r"""
{exports}
printf '%s' "$JUPYTER_TOKEN" >"$RUN_DIR/token"
printf '%s\n' {port} >"$RUN_DIR/port"
printf '%s\n' {flavour} >"$RUN_DIR/flavour"
: >"$RUN_DIR/jupyter.log"
# Its own session (setsid) or at least its own process group (set -m) so `down` can stop the
# whole group, and nohup so an SSH drop or a sleeping laptop does not hang it up.
if command -v setsid >/dev/null 2>&1; then CT_SETSID=setsid; else CT_SETSID=; set -m; fi
nohup $CT_SETSID "$JPATH" {args} >>"$RUN_DIR/jupyter.log" 2>&1 </dev/null 9>&- &
CT_PID=$!
printf '%s\n' "$CT_PID" >"$RUN_DIR/jupyter.pid"
exec 9>&-  # the pid is recorded: STOP may run now
"$PY" - "$CT_PID" {port} {timeout} <<'CT_PY_EOF'
"""
    + WAIT_PY
    + r"""
CT_PY_EOF
"""
)

# Held by START from before `activate` until Jupyter's PID is on disk, so that a STOP sent by an
# interrupted `up` can never miss a server that is still being launched.
START_LOCK = 'if command -v flock >/dev/null 2>&1; then exec 9>>"$RUN_DIR/.lock"; flock 9; fi'

# Stop the server's process group and every descendant (kernels run in sessions of their own).
STOP = r"""
set -u
RUN_DIR="${XDG_STATE_HOME:-$HOME/.local/state}/colabtunnel/"{profile}
ct_result() { printf '\n%s %s\n' "__COLABTUNNEL_RESULT__" "$1"; }
# A START still on its way (interrupted `up`) holds this lock until its PID is written.
if [ -d "$RUN_DIR" ] && command -v flock >/dev/null 2>&1; then
  exec 9>>"$RUN_DIR/.lock"; flock -w 120 9
fi
PID=$(cat "$RUN_DIR/jupyter.pid" 2>/dev/null)
case "$PID" in ''|*[!0-9]*) rm -rf "$RUN_DIR"; ct_result '{"ok": true, "was_running": false}'; exit 0;; esac
if ! kill -0 "$PID" 2>/dev/null || ! ps -p "$PID" -o args= 2>/dev/null | grep -q jupyter; then
  rm -rf "$RUN_DIR"; ct_result '{"ok": true, "was_running": false}'; exit 0
fi
tree() {
  ps -eo pid=,ppid= | awk -v root="$1" '
    { parent[$1] = $2 }
    END {
      keep[root] = 1; grew = 1
      while (grew) { grew = 0; for (p in parent) if (!(p in keep) && (parent[p] in keep)) { keep[p] = 1; grew = 1 } }
      for (p in keep) print p
    }'
}
PIDS=$(tree "$PID")
kill -TERM -- "-$PID" 2>/dev/null
kill -TERM $PIDS 2>/dev/null
i=0
while [ $i -lt {grace_ticks} ]; do
  left=
  for p in $PIDS; do kill -0 "$p" 2>/dev/null && left="$left $p"; done
  [ -z "$left" ] && break
  sleep 0.1; i=$((i + 1))
done
killed=false
if [ -n "${left:-}" ]; then kill -KILL -- "-$PID" 2>/dev/null; kill -KILL $left 2>/dev/null; killed=true; fi
rm -rf "$RUN_DIR"
ct_result "{\"ok\": true, \"was_running\": true, \"killed\": $killed}"
"""

LOG_TAIL = r"""
RUN_DIR="${XDG_STATE_HOME:-$HOME/.local/state}/colabtunnel/"{profile}
[ -f "$RUN_DIR/jupyter.log" ] || { echo "no Jupyter log for this profile on the host" >&2; exit 3; }
exec tail -n {lines} {follow} "$RUN_DIR/jupyter.log"
"""


def render(template: str, **values: str | int | float) -> str:
    """Fill `{name}` placeholders. Not str.format: bash and Python text is full of braces."""
    for name, value in values.items():
        template = template.replace("{" + name + "}", str(value))
    return template


def quote(value: str) -> str:
    return shlex.quote(value)
