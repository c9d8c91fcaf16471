"""The docs answer first: every profile key the loader accepts is documented in docs/profiles.md and
in profiles.example.toml, and every `error:` message the code can print has an entry in
docs/troubleshooting.md.

The error messages are collected from the source (not from a list kept here), so a message added
later fails this test until docs/troubleshooting.md explains it; the failure names each missing
message.

What counts as a message: the text given to ColabtunnelError or any subclass (their own __init__
included), to `output.error`, or to a function of the same module that passes one of its
parameters into one of those (a "factory", like profiles._Where.fail), found by following such
functions until no new one appears. A message held in a variable is followed to the literals
assigned to it in the same function (including dict-of-tuples lookups, as jupyter._stage_error
does). Re-raising another error's `.message` is a relay: that message was collected where it was
made. Anything else cannot be read statically and fails the test with its file and line, unless it
is listed in RELAYS with the reason.
"""

from __future__ import annotations

import ast
import re
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from colabtunnel import container_settings, profiles, slurm_settings

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "colabtunnel"
EXAMPLE = REPO / "profiles.example.toml"
TROUBLESHOOTING = REPO / "docs" / "troubleshooting.md"  # the whole page is the entries
PROFILES = REPO / "docs" / "profiles.md"
PROFILES_REFERENCE = "## Profiles reference"  # the section of PROFILES with the key table

# (file, function) whose message is another error's, passed on: why each is not a new message.
RELAYS = {
    ("keeper/process.py", "_relay"): "the keeper's own error, sent over the pipe and raised "
    "again in `up`",
    ("ssh/proxycommand.py", "__init__"): "ProxyFailed carries the message ProxySocket.failure "
    "builds",
    ("usage_errors.py", "render"): "click's own words for a usage error (docs/troubleshooting.md: "
    "Installation and the command line)",
}
PLACEHOLDER = "\0"  # where a message has a value filled in at run time
WRAPPERS = ("_one_line", "mask", "str")  # calls that pass a message's text through


# -- collecting the messages ----------------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    pattern: str  # the message's first line, PLACEHOLDER where a value goes
    where: str  # file:line of the code that makes it

    def regex(self) -> re.Pattern[str]:
        parts = [re.escape(p) for p in self.pattern.strip().split(PLACEHOLDER)]
        return re.compile(r"[^\n]*?".join(parts))

    def shown(self) -> str:
        return self.pattern.replace(PLACEHOLDER, "…")


@dataclass
class _Module:
    name: str  # file name relative to the package
    tree: ast.Module
    parents: dict[ast.AST, ast.AST] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for node in ast.walk(self.tree):
            for child in ast.iter_child_nodes(node):
                self.parents[child] = node

    def function_of(self, node: ast.AST) -> ast.FunctionDef | None:
        while node in self.parents:
            node = self.parents[node]
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                return node  # type: ignore[return-value]
        return None

    def class_of(self, node: ast.AST) -> ast.ClassDef | None:
        while node in self.parents:
            node = self.parents[node]
            if isinstance(node, ast.ClassDef):
                return node
        return None


def _modules() -> list[_Module]:
    return [
        _Module(str(path.relative_to(PACKAGE)), ast.parse(path.read_text(), str(path)))
        for path in sorted(PACKAGE.rglob("*.py"))
        if "remote" not in path.relative_to(PACKAGE).parts  # host code prints no `error:`
    ]


def _error_classes(modules: list[_Module]) -> dict[str, bool]:
    """Error class name → whether it defines its own __init__ (then its super().__init__ call is
    where the message is made, not its constructor's first argument)."""
    found = {"ColabtunnelError": False}
    grew = True
    while grew:
        grew = False
        for module in modules:
            for node in ast.walk(module.tree):
                if isinstance(node, ast.ClassDef) and node.name not in found:
                    bases = {
                        b.id if isinstance(b, ast.Name) else getattr(b, "attr", "")
                        for b in node.bases
                    }
                    if bases & set(found):
                        own_init = any(
                            isinstance(item, ast.FunctionDef) and item.name == "__init__"
                            for item in node.body
                        )
                        found[node.name] = own_init
                        grew = True
    return found


def _callee(call: ast.Call) -> tuple[str | None, str | None]:
    """(receiver, name) of a call: `output.error(...)` → ("output", "error"), `f(...)` → (None, "f")."""
    func = call.func
    if isinstance(func, ast.Name):
        return None, func.id
    if isinstance(func, ast.Attribute):
        receiver = func.value.id if isinstance(func.value, ast.Name) else None
        return receiver, func.attr
    return None, None


def _message_arg(call: ast.Call, position: int) -> ast.expr | None:
    for keyword in call.keywords:
        if keyword.arg in ("message", "problem"):
            return keyword.value
    return call.args[position] if len(call.args) > position else None


def _params(function: ast.FunctionDef) -> list[str]:
    names = [a.arg for a in function.args.posonlyargs + function.args.args]
    return names[1:] if names and names[0] in ("self", "cls") else names


class Collector:
    def __init__(self) -> None:
        self.modules = _modules()
        self.classes = _error_classes(self.modules)
        self.messages: list[Message] = []
        self.unreadable: list[str] = []
        # (module, function name) → position of the parameter that becomes the message
        self.factories: dict[tuple[str, str], int] = {}

    def sink_position(self, module: _Module, call: ast.Call) -> int | None:
        receiver, name = _callee(call)
        if name is None:
            return None
        if name in self.classes and not self.classes[name]:
            return 0
        if name == "__init__" and isinstance(call.func, ast.Attribute):
            owner = module.class_of(call)
            inner = call.func.value
            is_super = isinstance(inner, ast.Call) and _callee(inner)[1] == "super"
            if is_super and owner is not None and owner.name in self.classes:
                if owner.name == "ColabtunnelError":
                    return None  # the base class stores what its subclasses pass
                return 0
        if name == "error" and (
            receiver == "output" or (receiver is None and module.name == "output.py")
        ):
            return 0
        if (module.name, name) in self.factories:
            return self.factories[(module.name, name)]
        if receiver is not None:  # `module.factory(...)`: the module's file, in whichever package
            for (factory_module, factory), position in self.factories.items():
                if factory == name and Path(factory_module).stem == receiver:
                    return position
        return None

    def sites(self) -> Iterator[tuple[_Module, ast.Call, ast.expr]]:
        for module in self.modules:
            for node in ast.walk(module.tree):
                if not isinstance(node, ast.Call):
                    continue
                printed = _printed_error(node)
                if printed is not None:
                    yield module, node, printed
                    continue
                position = self.sink_position(module, node)
                arg = _message_arg(node, position) if position is not None else None
                if arg is not None:
                    yield module, node, arg

    def find_factories(self) -> None:
        """A function is a factory when one of its parameters is put into an error message as
        text (bare, not an attribute of it) and some caller passes it a string literal."""
        grew = True
        while grew:
            grew = False
            for module, call, arg in list(self.sites()):
                function = module.function_of(call)
                if function is None:
                    continue
                params = _params(function)
                for param in _text_params(arg, params):
                    key = (module.name, function.name)
                    position = params.index(param)
                    if key not in self.factories and self._given_text(key, position):
                        self.factories[key] = position
                        grew = True

    def _given_text(self, key: tuple[str, str], position: int) -> bool:
        """Whether some caller passes text (anything with a literal part) at `position`."""
        for module in self.modules:
            for node in ast.walk(module.tree):
                if not isinstance(node, ast.Call):
                    continue
                receiver, name = _callee(node)
                if name != key[1] or key[0] not in (module.name, f"{receiver}.py"):
                    continue
                arg = _message_arg(node, position)
                resolver = Resolver(module, module.function_of(node))
                if arg is not None and _readable(resolver.patterns(arg)):
                    return True
        return False

    def collect(self) -> None:
        self.find_factories()
        for module, call, arg in self.sites():
            function = module.function_of(call)
            where = f"colabtunnel/{module.name}:{call.lineno}"
            factory = function is not None and (module.name, function.name) in self.factories
            if factory and _text_params(arg, _params(function)):  # type: ignore[arg-type]
                continue  # a factory's own sink: its callers' literals are the messages
            if _is_relay(arg) or (function and (module.name, function.name) in RELAYS):
                continue
            patterns = Resolver(module, function).patterns(arg)
            if not _readable(patterns):
                self.unreadable.append(f"{where}: {ast.unparse(arg)}")
            for pattern in patterns:
                first_line = pattern.split("\n", 1)[0]
                if _readable([first_line]):
                    self.messages.append(Message(first_line, where))


def _readable(patterns: list[str]) -> bool:
    """Some text is known, beyond the values filled in at run time."""
    return any(p.replace(PLACEHOLDER, "").strip() for p in patterns)


def _printed_error(call: ast.Call) -> ast.expr | None:
    """`print(f"error: {...}")`: a message printed without output.error, its part after `error: `."""
    if _callee(call) != (None, "print") or not call.args:
        return None
    text = call.args[0]
    if isinstance(text, ast.JoinedStr) and text.values:
        first = text.values[0]
        if isinstance(first, ast.Constant) and str(first.value).startswith("error: "):
            rest = str(first.value)[len("error: ") :]
            values = ([ast.Constant(rest)] if rest else []) + text.values[1:]
            return ast.JoinedStr(values=values)
    if isinstance(text, ast.Constant) and str(text.value).startswith("error: "):
        return ast.Constant(str(text.value)[len("error: ") :])
    return None


def _is_relay(arg: ast.expr) -> bool:
    return any(isinstance(n, ast.Attribute) and n.attr == "message" for n in ast.walk(arg))


def _text_params(arg: ast.expr, params: list[str]) -> list[str]:
    """The parameter `arg` ends with as text (the whole of it, or a bare last `{param}`): what a
    factory's callers complete, as profiles._Where.fail does."""
    while isinstance(arg, ast.Call) and _callee(arg)[1] in WRAPPERS and arg.args:
        arg = arg.args[0]
    last = arg.values[-1] if isinstance(arg, ast.JoinedStr) and arg.values else arg
    if isinstance(last, ast.FormattedValue) and _bare_name(last):
        last = last.value
    return [last.id] if isinstance(last, ast.Name) and last.id in params else []


class Resolver:
    """The texts an expression can have (PLACEHOLDER for run-time values), followed through the
    local variables of its function and the tuples a function of the same module returns."""

    def __init__(
        self, module: _Module, function: ast.FunctionDef | None, seen: frozenset[str] = frozenset()
    ) -> None:
        self.module = module
        self.function = function
        self.params = set(_params(function)) if function else set()
        self.seen = seen  # functions being read already: no endless recursion

    def patterns(self, arg: ast.expr) -> list[str]:
        """[] when the text cannot be told."""
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            return [arg.value]
        if isinstance(arg, ast.JoinedStr):
            texts = [""]
            for value in arg.values:
                options = [str(value.value)] if isinstance(value, ast.Constant) else None
                if isinstance(value, ast.FormattedValue) and _bare_name(value):
                    options = self.local(value.value.id) or None  # type: ignore[attr-defined]
                texts = [t + o for t in texts for o in (options or [PLACEHOLDER])][:64]
            return texts
        if isinstance(arg, ast.BinOp) and isinstance(arg.op, ast.Add):
            left, right = self.patterns(arg.left), self.patterns(arg.right)
            return [a + b for a in left or [PLACEHOLDER] for b in right or [PLACEHOLDER]]
        if isinstance(arg, ast.IfExp):
            body, orelse = self.patterns(arg.body), self.patterns(arg.orelse)
            return (body or [PLACEHOLDER]) + (orelse or [PLACEHOLDER])
        if isinstance(arg, ast.Call) and _callee(arg)[1] in WRAPPERS and arg.args:
            return self.patterns(arg.args[0])
        if isinstance(arg, ast.Call) and isinstance(arg.func, ast.Name):
            return self.returned(arg.func.id)
        if isinstance(arg, ast.Name):
            return self.local(arg.id)
        return []

    def local(self, name: str) -> list[str]:
        """What a local variable (not a parameter) is given in the function."""
        if self.function is None or name in self.params:
            return []
        found: list[str] = []
        for node in ast.walk(self.function):
            if not isinstance(node, ast.Assign):
                continue
            for target in node.targets:
                if isinstance(target, ast.Name) and target.id == name:
                    found += self.patterns(node.value) or [PLACEHOLDER]
                elif isinstance(target, ast.Tuple):
                    names = [t.id if isinstance(t, ast.Name) else None for t in target.elts]
                    if name in names:
                        found += self.unpacked(node.value, names.index(name))
        return found

    def unpacked(self, value: ast.expr, index: int) -> list[str]:
        """Element `index` of a dict-of-tuples lookup, or of the tuples a function returns."""
        options: list[ast.expr] = []
        source = value.value if isinstance(value, ast.Subscript) else None
        if isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute):
            source = value.func.value
            options += value.args[1:2]  # .get(key, default)
        table = self._dict_named(source.id) if isinstance(source, ast.Name) else None
        if table is not None:
            options += table.values
        elif isinstance(value, ast.Call) and isinstance(value.func, ast.Name):
            return self.returned_tuples(value.func.id, index)
        found: list[str] = []
        for option in options:
            if isinstance(option, ast.Tuple) and len(option.elts) > index:
                found += self.patterns(option.elts[index])
        return found

    def _dict_named(self, name: str) -> ast.Dict | None:
        assert self.function is not None
        for node in ast.walk(self.function):
            if not (isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict)):
                continue
            if any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
                return node.value
        return None

    def _functions(self, name: str) -> list[ast.FunctionDef]:
        return [
            node
            for node in self.module.tree.body
            if isinstance(node, ast.FunctionDef) and node.name == name and name not in self.seen
        ]

    def _returns(self, function: ast.FunctionDef) -> list[ast.expr]:
        returns = (r.value for r in ast.walk(function) if isinstance(r, ast.Return))
        return [v for v in returns if v is not None and not _is_none(v)]

    def returned(self, name: str) -> list[str]:
        """The texts a function of this module returns, read in that function."""
        found: list[str] = []
        for function in self._functions(name):
            inner = Resolver(self.module, function, self.seen | {name})
            found += [t for value in self._returns(function) for t in inner.patterns(value)]
        return found

    def returned_tuples(self, name: str, index: int) -> list[str]:
        found: list[str] = []
        for function in self._functions(name):
            inner = Resolver(self.module, function, self.seen | {name})
            for value in self._returns(function):
                if isinstance(value, ast.Tuple) and len(value.elts) > index:
                    found += inner.patterns(value.elts[index])
        return found


def _is_none(value: ast.expr) -> bool:
    return isinstance(value, ast.Constant) and value.value is None


def _bare_name(value: ast.FormattedValue) -> bool:
    return isinstance(value.value, ast.Name) and value.conversion == -1 and not value.format_spec


def collected() -> Collector:
    collector = Collector()
    collector.collect()
    return collector


def _section(text: str, heading: str) -> str:
    start = text.index(heading)
    rest = text[start + len(heading) :]
    end = re.search(r"(?m)^## ", rest)
    return rest[: end.start()] if end else rest


# -- the tests ------------------------------------------------------------------------------------


def test_every_error_message_has_a_troubleshooting_entry() -> None:
    collector = collected()
    assert not collector.unreadable, (
        "these error messages cannot be read from the source; write them as literals (an f-string "
        "is fine) or, if they pass on another error's message, add the function to RELAYS in "
        "tests/test_docs.py:\n  " + "\n  ".join(collector.unreadable)
    )
    entries = [line for line in TROUBLESHOOTING.read_text().splitlines() if "error:" in line]
    missing = sorted(
        {
            f"{m.where}: error: {m.shown()}"
            for m in collector.messages
            if not any(m.regex().search(line.split("error:", 1)[1]) for line in entries)
        }
    )
    assert not missing, (
        f"{len(missing)} error message(s) have no entry in {TROUBLESHOOTING.relative_to(REPO)} "
        "(an entry is a line with `error: <the message>`, … for the parts filled in at run time, "
        "then its cause and fix):\n  " + "\n  ".join(missing)
    )


def test_the_collector_finds_what_it_must() -> None:
    """The collector itself: messages made each way the code makes them are all found."""
    shown = {m.shown() for m in collected().messages}
    assert "unknown profile '…'; known profiles: …" in shown, sorted(shown)  # profiles._error
    assert "unknown profile '…' (did you mean '…'?); known profiles: …" in shown  # a local's values
    assert "unknown key '…'" in shown  # through _Where.fail, a method factory
    assert (
        "workdir … does not exist on …" in shown
    )  # a dict-of-tuples lookup (jupyter._stage_error)
    assert "host preparation failed at …" in shown  # that lookup's default
    assert "host key for … is not known (… …)" in shown  # super().__init__ in a subclass
    assert "internal error: …" in shown  # output.error
    assert "… is not up" in shown  # plain ColabtunnelError
    assert "the Python package `colabtunnel` found at … is not …" in shown  # print("error: ...")
    assert (  # a function's returned tuple, unpacked into the message
        "no keyring backend is available (on a headless Linux machine there is often no Secret "
        "Service); colabtunnel will ask for the secret when it needs it"
    ) in shown


def test_every_profile_key_is_documented_in_the_docs_and_the_example() -> None:
    keys = [
        key for name, table in vars(profiles).items() if name.endswith("_CHECKS") for key in table
    ]
    assert "host" in keys and "keepalive" in keys
    reference = _section(PROFILES.read_text(), PROFILES_REFERENCE)
    example = EXAMPLE.read_text()
    not_in_docs = [k for k in keys if f"`{k}`" not in reference]
    # a key, or a table of keys ([profiles.NAME.slurm]) with each of its own keys in it
    not_in_example = [
        k
        for k in keys
        if not re.search(rf"(?m)^#?\s*{re.escape(k)}\s*=", example)
        and not re.search(rf"(?m)^\[profiles\.[^\]]+\.{re.escape(k)}\]", example)
    ]
    for table, keys_of in (
        ("slurm", slurm_settings._CHECKS),
        ("container", container_settings._CHECKS),
    ):
        not_in_example += [
            f"{table}.{k}"
            for k in keys_of
            if not re.search(rf"(?m)^#?\s*{re.escape(k)}\s*=", example)
        ]
    containers = (REPO / "docs" / "containers.md").read_text()
    not_in_docs += [
        f"container.{k}" for k in container_settings._CHECKS if f"`{k}`" not in containers
    ]
    assert not not_in_docs, (
        f"keys missing from {PROFILES.relative_to(REPO)} '{PROFILES_REFERENCE}': {not_in_docs}"
    )
    assert not not_in_example, (
        f"keys with no `key = ...` line in profiles.example.toml: {not_in_example}"
    )


def test_the_example_profiles_file_loads() -> None:
    data = tomllib.loads(EXAMPLE.read_text())
    loaded = profiles.load_profiles(EXAMPLE)
    assert set(data["profiles"]) <= set(loaded)
