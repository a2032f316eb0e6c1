"""`evdiff coverage`: which manual rules and which ported KVM functions a
corpus reached, and which it never did -- what a night did *not* test.

The inputs (libFuzzer's corpus, a findings directory, any scenario files)
are run through the implementations, each under a profiler
(`sys.setprofile`; here only, never in the fuzz target's loop), and counted
per distinct scenario:

* the reference's **rules**: every note the model makes (`Machine.note`,
  each citing the section it applies) and every choice the manuals leave
  open (`Machine.choose`, named by its rule).  `reference_rules` enumerates
  both from the model's source, one rule per call site (a helper that
  passes its argument on, such as `_outside` or `_shadow_blocks`, is
  followed to its own call sites), so a rule nothing reached is listed too;
* each port's **@origin functions** (`impls.origin.port_functions`, the
  listing of the fidelity test), by the kernel function they port;
* each port's note **branches** (`fuzz.causes.branch`), the branches the
  ported functions said they took.
"""
from __future__ import annotations

import ast
import json
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from fuzz import oracle
from fuzz.causes import branch
from impls import api
from impls.api import Allowed, Outcome
from impls.origin import port_functions
from impls.reference import model

MODEL = Path(model.__file__)
#: The model's methods whose first argument is a rule: the kind each makes.
SINKS = {"note": "note", "choose": "choice"}
#: libFuzzer names a corpus file by the SHA-1 of its content, without a suffix.
_LIBFUZZER_NAME = re.compile(r"[0-9a-f]{40}")


# ------------------------------------------------------------ the rules --


@dataclass(frozen=True)
class Rule:
    kind: str  # "note" or "choice"
    text: str  # as the model writes it, "…" where it puts a value
    line: int  # the call site in impls/reference/model.py
    pattern: re.Pattern = field(compare=False, repr=False)

    def matches(self, text: str) -> bool:
        return self.pattern.fullmatch(text) is not None

    def values(self, text: str) -> str:
        """What `text` put where the rule has "…", numbers made N
        (`fuzz.causes.branch`): "#PF(ec=N) | ext-int N"."""
        return " | ".join(branch(v) for v in self.pattern.fullmatch(text).groups())


def _template(node: ast.expr, params: list[str]) -> list:
    """A string argument as parts: text, ("param", name) for a parameter of
    the enclosing function, None for any other value."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.Name) and node.id in params:
        return [("param", node.id)]
    if isinstance(node, ast.JoinedStr):
        out = []
        for v in node.values:
            out += _template(v.value if isinstance(v, ast.FormattedValue) else v, params)
        return out
    return [None]


def _alternatives(node: ast.expr) -> list[ast.expr]:
    """The strings a conditional expression chooses between."""
    if isinstance(node, ast.IfExp):
        return _alternatives(node.body) + _alternatives(node.orelse)
    return [node]


def _self_calls(fn: ast.FunctionDef):
    for node in ast.walk(fn):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "self":
            yield node


def _params(fn: ast.FunctionDef) -> list[str]:
    return [a.arg for a in fn.args.posonlyargs + fn.args.args + fn.args.kwonlyargs]


def _rule(kind: str, parts: list, line: int) -> Rule:
    text = "".join(p if isinstance(p, str) else "…" for p in parts)
    regex = "".join(re.escape(p) if isinstance(p, str) else "(.*?)" for p in parts)
    return Rule(kind, text, line, re.compile(regex, re.DOTALL))


def reference_rules(source: str | None = None) -> list[Rule]:
    """Every rule the model can note or choose on, in source order.  A
    method whose rule argument holds one of its own parameters (`_outside`,
    `_shadow_blocks`) passes it on: where a caller gives it text, the rule is
    made at that call site; where it gives a value, the rule stays where it
    was (followed up to 4 calls deep; a method not called by name, such as
    an event handler, makes it with its parameters as values)."""
    tree = ast.parse(MODEL.read_text() if source is None else source)
    funcs = [f for f in ast.walk(tree) if isinstance(f, ast.FunctionDef)]
    found: set[tuple[str, tuple, int]] = set()
    #: method -> [(kind, parts holding its parameters, its parameters, line of the rule so far)]
    pending: dict[str, list[tuple[str, list, list[str], int]]] = {}

    def place(kind: str, parts: list, f: ast.FunctionDef, line: int) -> None:
        if any(isinstance(p, tuple) for p in parts):
            pending.setdefault(f.name, []).append((kind, parts, _params(f), line))
        else:
            found.add((kind, tuple(parts), line))

    def settle(entries) -> None:
        for kind, parts, _, line in entries:
            found.add((kind, tuple(None if isinstance(p, tuple) else p for p in parts), line))

    for f in funcs:
        for call in _self_calls(f):
            if call.func.attr in SINKS and call.args:
                for arg in _alternatives(call.args[0]):
                    place(SINKS[call.func.attr], _template(arg, _params(f)), f, call.lineno)
    for _ in range(4):
        forwards, pending = pending, {}
        called = set()
        for f in funcs:
            for call in _self_calls(f):
                for kind, parts, params, line in forwards.get(call.func.attr, ()):
                    called.add(call.func.attr)
                    bound = dict(zip(params[1:], call.args)) | {k.arg: k.value for k in call.keywords}
                    out, text = [], False
                    for p in parts:
                        sub = _template(bound[p[1]], _params(f)) if isinstance(p, tuple) and p[1] in bound else [p]
                        text |= isinstance(p, tuple) and any(isinstance(q, str) for q in sub)
                        out += sub
                    place(kind, out, f, call.lineno if text else line)
        for name in forwards.keys() - called:
            settle(forwards[name])
    for entries in pending.values():  # deeper than followed
        settle(entries)
    ordered = sorted(found, key=lambda t: (t[2], t[0], str(t[1])))
    return [_rule(kind, list(parts), line) for kind, parts, line in ordered]


def note_sites(fn) -> list[Rule]:
    """The notes a port function makes (calls of `.note(...)` in its body,
    `impls.hw.cpu.Recorder.note`): one rule each, numbered in its file."""
    import inspect
    import textwrap

    code = fn.__code__
    if code not in _NOTE_SITES:
        tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
        params = _params(tree.body[0])
        out = []
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "note" \
                    and node.args:
                for arg in _alternatives(node.args[0]):
                    parts = [None if isinstance(p, tuple) else p for p in _template(arg, params)]
                    out.append(_rule("note", parts, node.lineno + code.co_firstlineno - 1))
        _NOTE_SITES[code] = sorted(out, key=lambda r: r.line)
    return _NOTE_SITES[code]


_NOTE_SITES: dict = {}


# -------------------------------------------------------------- inputs --


def _load(path: Path):
    from fuzz import binary
    from fuzz.cli import TEXT_SUFFIXES, load_path

    if path.suffix in TEXT_SUFFIXES + (".bin",):
        return load_path(path)
    with open(path, "rb") as f:  # a libFuzzer corpus file
        return binary.decode(f.read(1 + binary.RECORD * binary.MAX_EVENTS))


def input_files(paths: list[str]) -> list[Path]:
    """The inputs named: scenario files and directories as `evdiff replay`
    reads them (`fuzz.cli.expand`), and in a directory also libFuzzer's
    corpus files (named by their SHA-1, no suffix).  A findings directory
    (with `stats.json` or `.evdiff/`) gives its corpus and each finding's
    inputs, without its generated files; a `.bin` beside a `.txt` of the
    same name (the store writes both) is left out."""
    from fuzz.cli import expand

    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir() and ((p / "stats.json").exists() or (p / ".evdiff").is_dir()):
            dirs = [p / "corpus"] if (p / "corpus").is_dir() else []
            dirs += sorted(f.parent for f in p.glob("*/finding.json"))
            out += input_files([str(d) for d in dirs])
            continue
        found = expand([str(p)])
        if p.is_dir():
            found += sorted(q for q in p.rglob("*") if _LIBFUZZER_NAME.fullmatch(q.name) and q.is_file())
        out += [q for q in found if q.suffix != ".bin" or not q.with_suffix(".txt").exists()]
    return out


# ----------------------------------------------------------- profiling --


class _Calls:
    """The code objects called while it is active (`sys.setprofile`), and
    the first argument of the calls to `watch` (code -> argument name)."""

    def __init__(self, watch: dict):
        self.watch = watch
        self.codes: set = set()
        self.args: list[tuple] = []

    def __call__(self, frame, event, arg):
        if event == "call":
            code = frame.f_code
            self.codes.add(code)
            name = self.watch.get(code)
            if name is not None:
                self.args.append((code, frame.f_locals[name]))

    def run(self, name: str, scenario):
        sys.setprofile(self)
        try:
            return oracle.run_one(name, scenario)
        finally:
            sys.setprofile(None)


# ------------------------------------------------------------ coverage --


@dataclass
class Port:
    name: str
    #: (file, kernel function) -> the code objects of the port's functions porting it
    functions: dict[tuple[str, str], set]
    #: every note the port's functions (glue included) can make: text -> Rule
    branches: dict[str, Rule] = field(default_factory=dict)
    hits: Counter = field(default_factory=Counter)  # (file, function) -> scenarios
    notes: Counter = field(default_factory=Counter)  # branch text -> scenarios
    unlisted: Counter = field(default_factory=Counter)  # a note no site matched (`branch`) -> scenarios
    crashes: int = 0

    def branch_of(self, text: str) -> str | None:
        return next((b for b, r in self.branches.items() if r.matches(text)), None)


@dataclass
class Coverage:
    impls: list[str]
    inputs: int = 0
    scenarios: int = 0
    rules: list[Rule] = field(default_factory=reference_rules)
    rule_hits: Counter = field(default_factory=Counter)  # Rule -> scenarios
    #: Rule -> the values it was made with (`Rule.values`) -> scenarios
    variants: dict = field(default_factory=dict)
    unlisted: Counter = field(default_factory=Counter)  # (kind, text) the enumeration missed -> scenarios
    too_many_choices: int = 0
    ports: dict[str, Port] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {
            "inputs": self.inputs, "scenarios": self.scenarios, "implementations": self.impls,
            "reference": {
                "rules": [{"kind": r.kind, "rule": r.text, "line": r.line, "scenarios": self.rule_hits[r],
                           "variants": dict(self.variants.get(r, Counter()).most_common())}
                          for r in self.rules],
                "not_enumerated": [{"kind": k, "text": t, "scenarios": n} for (k, t), n in self.unlisted.items()],
                "too_many_choices": self.too_many_choices,
            },
            "ports": {p.name: {
                "functions": [{"file": f, "function": fn, "scenarios": p.hits[(f, fn)]}
                              for f, fn in sorted(p.functions)],
                "reached": sum(1 for k in p.functions if p.hits[k]), "total": len(p.functions),
                "note_branches": [{"branch": b, "line": r.line, "scenarios": p.notes[b]}
                                  for b, r in sorted(p.branches.items())],
                "notes_not_enumerated": dict(p.unlisted), "crashes": p.crashes,
            } for p in self.ports.values()},
        }


def _ports(names: list[str]) -> dict[str, Port]:
    classes = {n: type(api.load(n)) for n in api.names()}
    classes = {n: c for n, c in classes.items() if "kernel_tree" in dir(c)}
    packages = {c.__module__ for c in classes.values()}
    out = {}
    for n in names:
        if n not in classes:
            continue
        fns: dict[tuple[str, str], set] = {}
        branches: dict[str, Rule] = {}
        for _, fn, _ in port_functions(classes[n], packages):
            o = getattr(fn, "__origin__", None)
            if o is not None:
                fns.setdefault((o.file, o.function), set()).add(fn.__code__)
            for r in note_sites(fn):
                branches.setdefault(r.text, r)
        # The most specific first: a note matches the site with the most text.
        ordered = sorted(branches.items(), key=lambda kv: -len(kv[1].pattern.pattern))
        out[n] = Port(n, fns, dict(ordered))
    return out


def measure(scenarios, names: list[str]) -> Coverage:
    """Run each distinct scenario of `scenarios` through `names` (the
    reference first) and count what it reached."""
    cov = Coverage(names, ports=_ports(names))
    note_code, choose_code = model.Machine.note.__code__, model.Machine.choose.__code__
    by_text: dict[tuple[str, str], Rule | None] = {}
    port_notes: dict[tuple[str, str], str | None] = {}  # (port, note) -> its branch (None: no site matched)
    seen = set()
    for scenario in scenarios:
        cov.inputs += 1
        if scenario in seen:
            continue
        seen.add(scenario)
        cov.scenarios += 1
        for name in names:
            calls = _Calls({note_code: "text", choose_code: "rule"} if name == oracle.REFERENCE else {})
            result = calls.run(name, scenario)
            if name == oracle.REFERENCE:
                reached = set()
                for code, text in calls.args:
                    key = ("note" if code is note_code else "choice", text)
                    if key not in by_text:
                        by_text[key] = next((r for r in cov.rules if r.kind == key[0] and r.matches(text)), None)
                    reached.add((by_text[key], by_text[key].values(text)) if by_text[key] else (None, key))
                for r, variant in reached:
                    if r is None:
                        cov.unlisted[variant] += 1
                    else:
                        cov.variants.setdefault(r, Counter())[variant] += 1
                cov.rule_hits.update({r for r, _ in reached if r is not None})
                cov.too_many_choices += isinstance(result, Allowed) and not result.complete
                continue
            port = cov.ports.get(name)
            if port is None:
                continue
            port.hits.update(k for k, codes in port.functions.items() if codes & calls.codes)
            if isinstance(result, Outcome):
                made = set()
                for _, text in result.notes:
                    if (name, text) not in port_notes:
                        port_notes[name, text] = port.branch_of(text)
                    made.add(port_notes[name, text] or (None, branch(text)))
                port.notes.update(b for b in made if isinstance(b, str))
                port.unlisted.update(b[1] for b in made if isinstance(b, tuple))
            else:
                port.crashes += 1
    return cov


# -------------------------------------------------------------- output --


def _short(path: str) -> str:
    return path.removeprefix("arch/x86/kvm/")


def render(cov: Coverage, unreached_only: bool = False, console=None) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    if console is None:
        console = Console()
        if not console.is_terminal:  # a file or a pipe: no wrapping at 80 columns
            console = Console(width=200)

    def count(n: int) -> str:
        return f"{n}" if n else "[bold red]0[/]"

    console.print(f"{cov.inputs} inputs, {cov.scenarios} distinct scenarios; "
                  f"implementations: {', '.join(cov.impls)}")
    if oracle.REFERENCE in cov.impls:
        reached = sum(1 for r in cov.rules if cov.rule_hits[r])
        t = Table(title=f"Reference rules (impls/reference/model.py): {reached} of {len(cov.rules)} reached",
                  title_justify="left")
        t.add_column("kind")
        t.add_column("rule (… a value)")
        t.add_column("line", justify="right")
        t.add_column("scenarios", justify="right")
        t.add_column("variants", justify="right")
        for r in cov.rules:
            if not unreached_only or not cov.rule_hits[r]:
                t.add_row(r.kind, escape(r.text), str(r.line), count(cov.rule_hits[r]),
                          str(len(cov.variants.get(r, ()))))
        for (kind, text), n in cov.unlisted.items():
            t.add_row(kind, f"{escape(text)} [yellow](not enumerated)[/]", "?", str(n), "")
        console.print(t)
        if cov.too_many_choices:
            console.print(f"{cov.too_many_choices} scenarios had too many choices to explore them all "
                          f"(only the choices met in the runs explored are counted)")
    if cov.ports:
        ports = list(cov.ports.values())
        t = Table(title="Ported KVM functions (@origin), scenarios that ran each (blank: not in that port)",
                  title_justify="left")
        t.add_column("file (arch/x86/kvm/)", no_wrap=True)
        t.add_column("function", no_wrap=True)
        for p in ports:
            t.add_column(p.name, justify="right", no_wrap=True)
        for key in sorted(set().union(*(p.functions for p in ports))):
            if not unreached_only or any(key in p.functions and not p.hits[key] for p in ports):
                t.add_row(_short(key[0]), key[1], *(count(p.hits[key]) if key in p.functions else "" for p in ports))
        t.add_section()
        t.add_row("", "reached", *(f"{sum(1 for k in p.functions if p.hits[k])}/{len(p.functions)}" for p in ports))
        if any(p.crashes for p in ports):
            t.add_row("", "crashed in", *(str(p.crashes) for p in ports))
        console.print(t)
        t = Table(title="Branches the ports note (… a value), scenarios that made each (blank: not in that port)",
                  title_justify="left")
        t.add_column("note")
        for p in ports:
            t.add_column(p.name, justify="right", no_wrap=True)
        for text in sorted(set().union(*(p.branches for p in ports))):
            if not unreached_only or any(text in p.branches and not p.notes[text] for p in ports):
                t.add_row(escape(text), *(count(p.notes[text]) if text in p.branches else "" for p in ports))
        for text in sorted(set().union(*(p.unlisted for p in ports))):
            t.add_row(f"{escape(text)} [yellow](not enumerated)[/]", *(str(p.unlisted[text] or "") for p in ports))
        t.add_section()
        t.add_row("reached", *(f"{sum(1 for b in p.branches if p.notes[b])}/{len(p.branches)}" for p in ports))
        console.print(t)


def main(args) -> int:
    from fuzz.cli import _impl_names

    names = _impl_names(args.impls)
    files = input_files(args.paths)
    scenarios = [_load(p) for p in files]  # all read first: bad input stops before any run
    cov = measure(scenarios, names)
    if args.json:
        print(json.dumps(cov.to_json(), indent=1))
    else:
        render(cov, args.unreached)
    return 0
