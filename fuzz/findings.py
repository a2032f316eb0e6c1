"""The findings store: one directory per divergence signature, written so that
a campaign killed at any moment loses nothing already written.

    findings/
      3fa9c2b1d0e4/            sha1 of the signature, first 12 hex digits
        finding.json           signature, field, implementations, verdicts,
                               hits, first/last seen, smallest input's size
        smallest.txt           the smallest scenario seen (text form), with the
        smallest.bin           signature in its leading comment; binary form
        examples/<sha1>.txt    at most `max_examples` other inputs, named by
        examples/<sha1>.bin    content, so a rerun never duplicates one
      stats.json, plot_data.csv    written by the campaign (`fuzz.campaign`)
      .evdiff/                 the campaign's own files (lock, temporaries,
                               libFuzzer log, generated target and seeds)

Every file is written to a temporary name and renamed into place (`os.replace`
is atomic on POSIX), and a new finding's directory is built aside and renamed
into place whole: a reader sees a complete finding or none, never half a file.
Several processes (libFuzzer's fork-mode jobs, Hypothesis) share one store,
an exclusive `flock` on `.evdiff/lock` serialises their writes.

Hits are counted per process and added to `finding.json` at most every
`FLUSH_SECONDS` (and by `flush()`): a process killed with SIGKILL loses at
most that many seconds of counts, never a finding, an input or an example.
A hit is one execution that showed the divergence (corpus replays and
Hypothesis's shrinking included), so hits measure how easy a bug is to hit,
not how many distinct inputs show it.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from fuzz import binary
from fuzz.scenario import Scenario
from fuzz.text import format_scenario

FLUSH_SECONDS = 2.0
MAX_EXAMPLES = 10
#: How many scenarios of one cause signature are minimised before the
#: store files every later one where most of them went (`FindingStore._file`).
MINIMISE_TRIES = 4
STATE_DIR = ".evdiff"

try:
    import fcntl
except ImportError:  # pragma: no cover -- not POSIX: one process a store
    fcntl = None


def signature_hash(signature: str) -> str:
    """The stable short name of a signature (its directory's name)."""
    return hashlib.sha1(signature.encode()).hexdigest()[:12]


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


_UMASK = os.umask(0o022)
os.umask(_UMASK)


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write `path` so that it is either its old content or all of `data`."""
    if isinstance(data, str):
        data = data.encode()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".tmp-{os.getpid()}-", suffix=path.name)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def valid_meta(meta) -> bool:
    """Whether a parsed `finding.json` has the shape this store writes: an
    object with a string signature, an integer hit count and the smallest
    input's size (another shape -- `[1, 2]`, `42`, `{}` -- is set aside)."""
    if not isinstance(meta, dict) or not isinstance(meta.get("signature"), str):
        return False
    hits, smallest = meta.get("hits", 0), meta.get("smallest", {})
    return (isinstance(hits, int) and not isinstance(hits, bool) and isinstance(smallest, dict)
            and all(isinstance(smallest.get(k, 0), int) for k in ("events", "extra")))


def canonical_bytes(scenario: Scenario) -> bytes | None:
    """The binary form, or None where it cannot hold the scenario."""
    try:
        data = binary.encode(scenario)
    except (KeyError, ValueError, OverflowError):
        return None
    return data if binary.decode(data) == scenario else None


def scenario_size(scenario: Scenario) -> tuple[int, int]:
    """What "smaller" means: fewer events, then fewer non-default arguments."""
    extra = 0
    for ev in scenario.events:
        for p, v in zip(ev.spec.params, ev.args):
            extra += v != p.default
    return len(scenario.events), extra + len(scenario.config.caps) + (not scenario.config.npt)


@dataclass
class Finding:
    """One signature's `finding.json`, as read back."""

    path: Path
    meta: dict

    @property
    def signature(self) -> str:
        return self.meta["signature"]

    @property
    def hits(self) -> int:
        return self.meta.get("hits", 0)

    @property
    def smallest_events(self) -> int:
        return self.meta.get("smallest", {}).get("events", 0)


class FindingStore:
    """Record divergences into `root`, one directory per signature.

    `record(report)` is cheap when it changes nothing on disk (a known
    signature, no smaller input, examples full): a dictionary update.
    """

    def __init__(self, root: str | Path, max_examples: int = MAX_EXAMPLES, engine: str = "atheris",
                 minimise: bool = True):
        self.root = Path(root)
        self.minimise = minimise
        #: a cause's signature -> the signature it is filed under (`record`)
        self._alias: dict[str, str] = {}
        #: a cause's signature -> the other signatures its minimised scenarios
        #: had, while it has no alias yet (`_file`)
        self._drifted: dict[str, dict[str, int]] = {}
        self.max_examples = max_examples
        self.engine = engine
        self.state = self.root / STATE_DIR
        self.state.mkdir(parents=True, exist_ok=True)
        (self.state / "tmp").mkdir(exist_ok=True)
        self._pending: dict[str, int] = {}  # signature -> hits not yet on disk
        self._last_flush = time.monotonic()
        #: what this process knows of each signature on disk: smallest size, example names
        self._known: dict[str, tuple[tuple[int, int], set[str]]] = {}
        self._impls: dict[str, set[str]] = {}  # signature -> implementations seen with it
        self.new_this_process: list[str] = []

    # ---------------------------------------------------------- locking --

    @contextlib.contextmanager
    def lock(self):
        if fcntl is None:
            yield
            return
        with open(self.state / "lock", "a+b") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    # -------------------------------------------------------- recording --

    def record(self, report) -> list[str]:
        """Record each root cause of an oracle report (`report.causes`: what
        each differing implementation did wrong first, grouped; the rest of
        what it does differently is most often a consequence); returns the
        signatures this call wrote as new findings.

        A cause this store has not seen is first minimised
        (`minimize.minimize_symptom`) and filed under the signature of the
        minimised scenario, as syzkaller names a crash by its reproducer: a
        note made by an event that has nothing to do with the bug then no
        longer names the finding.  The minimised scenario is the finding's
        smallest input, the one that was met an example."""
        new = []
        scenario = report.scenario
        size = None
        filed_now: set[str] = set()
        for cause in report.causes:
            sig = self._alias.get(cause.signature)
            if sig is None:
                sig, written = self._file(cause, report)
                new += written
                if written:
                    filed_now.add(sig)
                    continue
            if sig in filed_now:
                continue  # two causes of this scenario minimised to one
            filed_now.add(sig)
            known = self._known[sig]
            self._pending[sig] = self._pending.get(sig, 0) + 1
            if not set(cause.impls) <= self._impls[sig] and cause.signature == sig:
                self._add_impls(sig, cause)
            smallest, examples = known
            size = size or scenario_size(scenario)
            if size < smallest:
                self._update_smallest(sig, scenario, size)
            elif len(examples) < self.max_examples:
                self._add_example(sig, scenario)
        if time.monotonic() - self._last_flush > FLUSH_SECONDS:
            self.flush()
        return new

    def _file(self, cause, report) -> tuple[str, list[str]]:
        """Where a cause this process has no alias for is filed:
        (signature, [signature] if this call wrote it as a new finding).

        Minimising keeps the implementation's symptom, not its cause, so it
        can end in another bug with the same symptom (measured: 8 of 40
        scenarios showing seed class A's cause minimised to one of three
        unrelated ones).  Taking that first answer for every later scenario
        of the signature hid class A for a whole campaign when the first
        scenario drifted.  So a signature is aliased at once only where its
        minimised scenario keeps it; otherwise its next scenarios are
        minimised too (up to `MINIMISE_TRIES`), and it is filed under its
        own name as soon as one keeps it, else where most went."""
        raw = cause.signature
        if not self.minimise or raw in self._known or (self.dir_for(raw) / "finding.json").exists():
            self._alias[raw] = raw
            new = self._write_new_or_load(raw, cause, report.scenario)
            return raw, [raw] if new else []
        from fuzz import oracle
        from fuzz.minimize import minimize_symptom

        impl = cause.impls[0]
        small = minimize_symptom(report.scenario, impl)
        again = oracle.compare(small, list(report.results))
        mine = next((c for c in again.causes if impl in c.impls), cause)
        sig = mine.signature
        if sig == raw:
            self._alias[raw] = raw
            self._drifted.pop(raw, None)
        else:
            drifts = self._drifted.setdefault(raw, {})
            drifts[sig] = drifts.get(sig, 0) + 1
            if sum(drifts.values()) >= MINIMISE_TRIES:
                self._alias[raw] = max(drifts, key=drifts.get)
                del self._drifted[raw]
        new = self._write_new_or_load(sig, mine, small, example=report.scenario)
        return sig, [sig] if new else []

    def dir_for(self, signature: str) -> Path:
        return self.root / signature_hash(signature)

    def _read_meta(self, d: Path) -> dict | None:
        """`finding.json` of directory `d`; None where it is missing,
        unreadable, or not the shape this store writes (`valid_meta`)."""
        try:
            meta = json.loads((d / "finding.json").read_text())
        except (OSError, ValueError, UnicodeDecodeError):
            return None
        return meta if valid_meta(meta) else None

    def _remember(self, sig: str, meta: dict, d: Path) -> None:
        sm = meta.get("smallest", {})
        ex = d / "examples"
        names = {p.stem for p in ex.glob("*.txt")} if ex.is_dir() else set()
        self._known[sig] = ((sm.get("events", 1 << 30), sm.get("extra", 1 << 30)), names)
        self._impls[sig] = set(meta.get("impls", ()))

    def _write_new_or_load(self, sig: str, div, scenario: Scenario, example: Scenario | None = None) -> bool:
        """Load the finding `sig`, or write it with `scenario` as its
        smallest input and `example` (default: `scenario`) as its first
        example; `div` is a `fuzz.causes.Cause`.  Whether it was new."""
        d = self.dir_for(sig)
        with self.lock():
            meta = self._read_meta(d)
            if meta is not None:
                self._remember(sig, meta, d)
                new = False
            else:
                size = scenario_size(scenario)
                stamp = now()
                meta = {
                    "signature": sig,
                    "hash": signature_hash(sig),
                    "field": div.field,
                    "function": div.function,
                    "impls": list(div.impls),
                    "vendor": scenario.config.vendor,
                    "expected": div.expected,
                    "got": div.got,
                    "verdicts": div.verdicts,
                    "hits": 1,
                    "first_seen": stamp,
                    "first_seen_unix": round(time.time(), 3),
                    "last_seen": stamp,
                    "engine": self.engine,
                    "smallest": {"events": size[0], "extra": size[1]},
                }
                tmp = Path(tempfile.mkdtemp(dir=self.state / "tmp", prefix=f"{os.getpid()}-"))
                os.chmod(tmp, 0o777 & ~_UMASK)  # as the directories beside it, not mkdtemp's 0700
                self._write_input(tmp / "smallest", sig, scenario)
                (tmp / "examples").mkdir()
                example = example or scenario
                self._write_input(tmp / "examples" / self._example_name(example), sig, example)
                write_atomic(tmp / "finding.json", json.dumps(meta, indent=1, sort_keys=True))
                if d.exists():  # a directory without finding.json: from a store we cannot read; keep it
                    d.rename(d.with_name(d.name + f".unreadable-{int(time.time())}"))
                os.rename(tmp, d)
                self._remember(sig, meta, d)
                new = True
        if new:
            self.new_this_process.append(sig)
        return new

    def _add_impls(self, sig: str, cause) -> None:
        """An implementation seen with this cause for the first time: add it,
        with its verdicts (first seen wins for a pair already there)."""
        d = self.dir_for(sig)
        with self.lock():
            meta = self._read_meta(d)
            if meta is None:
                return
            impls = set(meta.get("impls", ())) | set(cause.impls)
            meta["impls"] = sorted(impls)
            meta["got"] = {**cause.got, **meta.get("got", {})}
            verdicts = {**cause.verdicts, **meta.get("verdicts", {})}
            for pair in verdicts:  # both sides of a pair now show the cause
                if set(pair.split("->")) <= impls:
                    verdicts[pair] = "still-wrong"
            meta["verdicts"] = verdicts
            write_atomic(d / "finding.json", json.dumps(meta, indent=1, sort_keys=True))
            self._impls[sig] = set(meta["impls"])

    def _update_smallest(self, sig: str, scenario: Scenario, size) -> None:
        d = self.dir_for(sig)
        with self.lock():
            meta = self._read_meta(d)
            if meta is None:
                return
            sm = meta.get("smallest", {})
            if size < (sm.get("events", 1 << 30), sm.get("extra", 1 << 30)):
                self._write_input(d / "smallest", sig, scenario)
                meta["smallest"] = {"events": size[0], "extra": size[1]}
                write_atomic(d / "finding.json", json.dumps(meta, indent=1, sort_keys=True))
            self._remember(sig, meta, d)

    def _example_name(self, scenario: Scenario) -> str:
        return hashlib.sha1(format_scenario(scenario, with_description=False).encode()).hexdigest()[:16]

    def _add_example(self, sig: str, scenario: Scenario) -> None:
        name = self._example_name(scenario)
        smallest, names = self._known[sig]
        if name in names:
            return
        d = self.dir_for(sig) / "examples"
        with self.lock():
            d.mkdir(exist_ok=True)
            on_disk = {p.stem for p in d.glob("*.txt")}
            if len(on_disk) < self.max_examples and name not in on_disk:
                self._write_input(d / name, sig, scenario)
                on_disk.add(name)
            self._known[sig] = (smallest, on_disk)

    def _write_input(self, stem: Path, sig: str, scenario: Scenario) -> None:
        comment = "".join(f"; {line}\n" for line in f"divergence: {sig}".splitlines())
        text = comment + format_scenario(scenario, with_description=False)
        data = canonical_bytes(scenario)
        if data is not None:  # .bin first: a .txt always has its .bin beside it
            write_atomic(stem.with_suffix(".bin"), data)
        write_atomic(stem.with_suffix(".txt"), text if text.endswith("\n") else text + "\n")

    def mark(self, signature: str, **fields) -> None:
        """Set fields of a finding's `finding.json` (e.g. `shrunk=True`)."""
        d = self.dir_for(signature)
        with self.lock():
            meta = self._read_meta(d)
            if meta is not None and any(meta.get(k) != v for k, v in fields.items()):
                meta.update(fields)
                write_atomic(d / "finding.json", json.dumps(meta, indent=1, sort_keys=True))

    def maybe_flush(self) -> None:
        """`flush()` if the last one is more than `FLUSH_SECONDS` old."""
        if self._pending and time.monotonic() - self._last_flush > FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        """Add this process's pending hit counts to the findings on disk."""
        self._last_flush = time.monotonic()
        if not self._pending:
            return
        pending, self._pending = self._pending, {}
        stamp = now()
        with self.lock():
            for sig, n in pending.items():
                d = self.dir_for(sig)
                meta = self._read_meta(d)
                if meta is None:
                    continue
                meta["hits"] = meta.get("hits", 0) + n
                meta["last_seen"] = stamp
                write_atomic(d / "finding.json", json.dumps(meta, indent=1, sort_keys=True))

    # ---------------------------------------------------------- reading --

    def findings(self) -> list[Finding]:
        """Every complete finding in the store, by first seen."""
        out = []
        if not self.root.is_dir():
            return out
        for d in self.root.iterdir():
            if d.is_dir() and not d.name.startswith("."):
                meta = self._read_meta(d)
                if meta is not None:
                    out.append(Finding(d, meta))
        return sorted(out, key=lambda f: (f.meta.get("first_seen", ""), f.signature))

    def names(self) -> set[str]:
        """Directory names of the complete findings: the same ones
        `findings` lists (the status line and the summary count alike)."""
        try:
            entries = list(os.scandir(self.root))
        except OSError:
            return set()
        return {e.name for e in entries if not e.name.startswith(".") and e.is_dir()
                and self._read_meta(Path(e.path)) is not None}

    def set_aside_invalid(self) -> list[Path]:
        """Rename each finding directory whose `finding.json` cannot be read
        or has the wrong shape to `NAME.unreadable-TIME` (kept, never
        deleted), so that a campaign goes on and records that signature
        afresh; returns the new paths.  Run once at a campaign's start."""
        moved = []
        if not self.root.is_dir():
            return moved
        with self.lock():
            for d in sorted(self.root.iterdir()):
                if (d.is_dir() and not d.name.startswith(".") and ".unreadable-" not in d.name
                        and (d / "finding.json").exists() and self._read_meta(d) is None):
                    new = d.with_name(d.name + f".unreadable-{int(time.time())}")
                    d.rename(new)
                    moved.append(new)
        return moved

    def signatures(self) -> set[str]:
        return {f.signature for f in self.findings()}

    def clean_stale(self) -> int:
        """Remove temporaries left by processes that no longer run (a
        SIGKILL between creating and renaming).  Returns how many."""
        removed = 0
        for p in list((self.state / "tmp").iterdir()) + list(self.root.rglob(".tmp-*")):
            pid = p.name.removeprefix(".tmp-").split("-", 1)[0]
            if pid.isdigit() and _alive(int(pid)):
                continue
            with contextlib.suppress(OSError):
                shutil.rmtree(p) if p.is_dir() else p.unlink()
                removed += 1
        return removed


def _alive(pid: int) -> bool:
    """Whether process `pid` still runs (a zombie, killed but not yet
    reaped, does not: it will write nothing more)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return True
