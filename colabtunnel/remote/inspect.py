"""Everything `up` and `doctor` need to know about the host, in one round trip.

Host code (Python 3.7+), run by the Python behind the profile's `jupyter`, after its `activate`:
  python - RUN_DIR WANT_PORT JUPYTER WATCH_JSON
Prints one line `__COLABTUNNEL_RESULT__ {json}`: Python and package versions, the user, a free
port, the server an earlier `up` left (with its token, from the 0600 run directory), the GPUs,
and the settings of the host's Jupyter config that colabtunnel watches.
"""

import ast
import glob
import json
import os
import re
import socket
import subprocess
import sys
from typing import Any, Dict, List, Optional, Pattern, Tuple

from colabtunnel.remote.alive import alive  # host: inline
from colabtunnel.remote.gpu_query import gpus  # host: inline

run_dir, want_port, jupyter = sys.argv[1], int(sys.argv[2]), sys.argv[3]
watch: Dict[str, List[str]] = json.loads(sys.argv[4])


def versions(names: Tuple[str, ...]) -> Dict[str, Optional[str]]:
    # What importlib.metadata would answer (the first distribution on sys.path wins), read from
    # the *.dist-info / *.egg-info names: importing importlib.metadata alone costs 0.03-0.05 s.
    want = {re.sub(r"[-_.]+", "_", n).lower(): n for n in names}
    found: Dict[str, Optional[str]] = dict.fromkeys(names)
    for entry in sys.path:
        try:
            items = sorted(os.listdir(entry or "."))
        except OSError:
            continue
        for item in items:
            stem, _, kind = item.rpartition(".")
            if kind not in ("dist-info", "egg-info") or "-" not in stem:
                continue
            name, version = stem.split("-")[:2]
            known = want.get(re.sub(r"[-_.]+", "_", name).lower())
            if known is not None and found[known] is None:
                found[known] = version
    return found


def port_free(port: int) -> bool:
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


def read(name: str) -> Optional[str]:
    try:
        with open(os.path.join(run_dir, name)) as fh:
            return fh.read().strip()
    except OSError:
        return None


def existing() -> Optional[Dict[str, Any]]:
    pid, port, token = read("jupyter.pid"), read("port"), read("token")
    if not (pid and port and token and pid.isdigit() and port.isdigit()):
        return None
    if not alive(int(pid)):
        return {"pid": int(pid), "port": int(port), "alive": False}
    import urllib.request  # only when a previous server may be there: 0.02 s to import

    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/status", headers={"Authorization": "token " + token}
    )
    try:
        answering = urllib.request.urlopen(req, timeout=5).status == 200
    except Exception:
        answering = False
    return {
        "pid": int(pid),
        "port": int(port),
        "alive": True,
        "answering": answering,
        "token": token,
        "flavour": read("flavour"),
    }


def config_dirs() -> Tuple[List[str], Optional[str]]:
    # Where this Jupyter reads config: what `jupyter --paths --json` lists (JUPYTER_CONFIG_DIR or
    # ~/.jupyter, JUPYTER_CONFIG_PATH, the environment's etc/jupyter, the system directories).
    # jupyter_core answers in this interpreter, the one that runs `jupyter`, for 0.02 s; the
    # command itself (0.05 s more) only when it cannot.
    try:
        from jupyter_core.paths import jupyter_config_path  # type: ignore[import-not-found,unused-ignore]

        return list(jupyter_config_path()), None
    except Exception:
        pass
    try:
        done = subprocess.run([jupyter, "--paths", "--json"], capture_output=True, timeout=30)
        if done.returncode:
            raise OSError(f"exit {done.returncode}")
        return list(json.loads(done.stdout)["config"]), None
    except Exception as exc:
        own = os.environ.get("JUPYTER_CONFIG_DIR") or os.path.expanduser("~/.jupyter")
        return [own], f"`jupyter --paths --json` failed ({exc}): only {own} was scanned"


def config_files(directory: str) -> Tuple[List[str], List[str]]:
    py = sorted(glob.glob(os.path.join(directory, "jupyter_*config.py")))
    js = sorted(glob.glob(os.path.join(directory, "jupyter_*config.json")))
    js += sorted(glob.glob(os.path.join(directory, "jupyter_*config.d", "*.json")))
    return py, js


def setting(
    path: str,
    line: Optional[int],
    section: str,
    trait: str,
    text: str,
    literal: bool,
    value: Any,
) -> Optional[Dict[str, Any]]:
    if trait == "token" and not (literal and value == ""):
        return None  # only an emptied token matters, and no token value leaves the host
    if not isinstance(value, (str, int, float, bool, type(None))):
        literal, value = False, None
    return {
        "file": path,
        "line": line,
        "section": section,
        "trait": trait,
        "text": text,
        "literal": literal,
        "value": value,
    }


def py_settings(path: str, assign: "Pattern[str]") -> List[Optional[Dict[str, Any]]]:
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
            found.append(
                setting(path, number, match.group(1), match.group(2), text, literal, value)
            )
    return found


def json_settings(
    path: str, sections: List[str], traits: List[str]
) -> List[Optional[Dict[str, Any]]]:
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
        top = next((i for i, row in enumerate(lines) if f'"{section}"' in row), len(lines))
        for trait in traits:
            if trait in block:
                line = next(
                    (i + 1 for i in range(top, len(lines)) if f'"{trait}"' in lines[i]), None
                )
                value = block[trait]
                found.append(setting(path, line, section, trait, json.dumps(value), True, value))
    return found


def config_settings(watch: Dict[str, List[str]]) -> Dict[str, Any]:
    sections, traits = watch["sections"], watch["traits"]
    assign = re.compile(
        r"^\s*c\.({})\.({})\s*=(?!=)(.*)$".format("|".join(sections), "|".join(traits))
    )
    dirs, problem = config_dirs()
    found: List[Optional[Dict[str, Any]]] = []
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
    "jupyter_path": jupyter,
    "versions": versions(names),
    "uid": os.getuid() if hasattr(os, "getuid") else -1,  # Windows (`up local`) has none
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
