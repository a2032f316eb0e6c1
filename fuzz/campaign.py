"""`evdiff fuzz`: a campaign, started in the evening, read in the morning.

Two engines share one findings store (`fuzz.findings`), one status line, one
stats file and one summary:

* **atheris** (default): libFuzzer drives `fuzz/evdiff_fuzzer.py` through a
  generated executable wrapper (`<findings>/.evdiff/target`, with a shebang
  naming this interpreter: libFuzzer's `-fork` re-runs argv[0] through `sh`).
  `--jobs N` is `-jobs=N -workers=N`: N independent fuzzers sharing the
  corpus directory, their logs in `.evdiff/workers/` (measured by `evdiff
  bench` on 2 cores: 1.31x one job, where fork mode `-fork=N
  -ignore_crashes=1` made 0.87x: its jobs restart the slowly starting
  target).  `--parallel fork` chooses fork mode, which survives a fuzzer
  process that dies (a worker that dies is not replaced).  The seeds
  (`corpus/seeds`, in binary form) and a dictionary are written at start,
  the corpus directory grows across runs.  libFuzzer's output goes to
  `<findings>/.evdiff/libfuzzer.log`; the status line is parsed from it.
* **hypothesis**: `fuzz.properties.campaign`, with the example database in
  `<findings>/.evdiff/hypothesis`.

Files a campaign keeps in the findings directory, besides one directory per
signature: `stats.json` (rewritten every few seconds: execs, execs/s,
coverage, corpus, findings, ...) and `plot_data.csv` (one row each time, for
plotting).  Rerunning with the same directories resumes: the corpus and the
findings stay, a known signature is never recorded twice.
"""
from __future__ import annotations

import contextlib
import csv
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from fuzz import binary, seeds, targetenv
from fuzz import findings as fstore
from fuzz.scenario import EvdiffError

ROOT = Path(__file__).resolve().parent.parent
#: Below this many coverage features after the start-up phase, the target
#: is almost certainly not instrumented (an uninstrumented Python target
#: shows a handful; the reference alone gives ~50 on the empty input).
MIN_COVERAGE = 40
COVERAGE_CHECK_SECONDS = 20
STATS_SECONDS = 5


@dataclass
class Options:
    engine: str = "atheris"
    time: float = 0  # seconds; 0: until interrupted
    jobs: int = 1
    parallel: str = "workers"  # with jobs > 1: libFuzzer's -jobs=N -workers=N, or -fork=N ("fork")
    findings: Path = Path("findings")
    corpus: Path | None = None
    seeds: Path | None = seeds.SEEDS  # None: start without seeds
    extra: list[str] = field(default_factory=list)  # passed to libFuzzer
    max_examples: int = fstore.MAX_EXAMPLES
    impls: str | None = None
    status_every: float = 10.0  # plain status lines (not a terminal)
    quiet: bool = False
    known: dict[str, str] = field(default_factory=dict)  # signature -> reason (fuzz.known)


@dataclass
class Stats:
    engine: str = ""
    status: str = "starting"
    started: float = field(default_factory=time.time)
    elapsed: float = 0.0
    execs: int = 0
    execs_per_s: float = 0.0
    cov: int = 0
    ft: int = 0
    corpus: int = 0
    findings: int = 0
    new_findings: int = 0
    last_new_ago: float | None = None
    jobs: int = 1
    harness_crashes: int = 0
    implementations: list[str] = field(default_factory=list)
    #: with status "died": how libFuzzer ended (a signal's name, or its exit code)
    signal: str | None = None
    exit_code: int | None = None


# ------------------------------------------------------------- status --


def _hms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


class Monitor:
    """Status line, stats file and plot data of one campaign."""

    def __init__(self, opts: Options, store: fstore.FindingStore, engine: str, console):
        self.opts, self.store, self.console = opts, store, console
        self.stats = Stats(engine=engine, jobs=opts.jobs)
        self.t0 = time.monotonic()
        self.known = store.names()
        self.last_new: float | None = None
        self._last_stats = 0.0
        self._last_line = 0.0
        self._live = None
        self._rate_window: list[tuple[float, int]] = []

    def start(self):
        if self.console.is_terminal and not self.opts.quiet:
            from rich.live import Live

            self._live = Live(self.line(), console=self.console, refresh_per_second=2, transient=False)
            self._live.start()
        return self

    def stop(self):
        if self._live is not None:
            self._live.update(self.line())
            self._live.stop()
            self._live = None

    def note(self, text: str, style: str | None = None) -> None:
        """A message above the status line."""
        self.console.print(text, style=style, markup=False, highlight=False, soft_wrap=True)

    def update(self, force: bool = False) -> None:
        now = time.monotonic()
        st = self.stats
        st.elapsed = now - self.t0
        self._rate_window.append((now, st.execs))
        while len(self._rate_window) > 2 and now - self._rate_window[0][0] > 10:
            self._rate_window.pop(0)
        (t_a, e_a), (t_b, e_b) = self._rate_window[0], self._rate_window[-1]
        st.execs_per_s = (e_b - e_a) / (t_b - t_a) if t_b > t_a else 0.0
        if force or now - self._last_stats >= 1.0:
            sigs = self.store.names()
            fresh = sigs - self.known
            if fresh:
                self.last_new = now
                st.new_findings += len(fresh)
                self.known |= fresh
            st.findings = len(sigs)
            st.last_new_ago = None if self.last_new is None else now - self.last_new
        if self._live is not None:
            self._live.update(self.line())
        elif not self.opts.quiet and (force or now - self._last_line >= self.opts.status_every):
            self._last_line = now
            self.console.print(self.line(), markup=False, highlight=False, soft_wrap=True)
        if force or now - self._last_stats >= STATS_SECONDS:
            self._last_stats = now
            self.write_stats()

    def line(self):
        st = self.stats
        last = "none this run" if st.last_new_ago is None else f"last new {_hms(st.last_new_ago)} ago"
        cov = f"cov {st.cov} ft {st.ft}" if st.engine == "atheris" else "cov -"
        return (f"[{st.engine}] {_hms(st.elapsed)}  execs {st.execs:,} ({st.execs_per_s:,.0f}/s)  {cov}  "
                f"corpus {st.corpus}  findings {st.findings} (+{st.new_findings} new, {last})")

    def write_stats(self) -> None:
        root = self.store.root
        data = asdict(self.stats)
        fstore.write_atomic(root / "stats.json", json.dumps(data, indent=1) + "\n")
        plot = root / "plot_data.csv"
        new = not plot.exists()
        with open(plot, "a", newline="") as f:
            w = csv.writer(f)
            if new:
                w.writerow(["unix_time", "elapsed_s", "execs", "execs_per_s", "cov", "ft", "corpus", "findings"])
            st = self.stats
            w.writerow([int(time.time()), round(st.elapsed, 1), st.execs, round(st.execs_per_s, 1), st.cov, st.ft,
                        st.corpus, st.findings])


# ------------------------------------------------------------ summary --


def export_command(f: fstore.Finding) -> str:
    """The command that turns a finding into a regression case."""
    name = re.sub(r"[^a-z0-9]+", "-", f"{f.meta.get('function', 'cause')}-{f.meta.get('vendor', '')}".lower())
    return f"evdiff export-test {f.path / 'smallest.txt'} --name {name.strip('-')}-{f.path.name[:6]}"


def summary(store: fstore.FindingStore, console, title: str = "findings", known: dict[str, str] | None = None) -> None:
    """The table a developer reads in the morning: one row a root cause
    (`fuzz.causes`), by hits, with the implementations that show it, their
    verdicts, the blamed KVM function, the smallest scenario and the
    command that exports it as a test.  Causes in the known list
    (`fuzz.known`) come last, apart, with their reason."""
    everything = sorted(store.findings(), key=lambda f: -f.hits)
    if not everything:
        console.print(f"no findings in {store.root}", markup=False)
        return
    known = known or {}
    found = [f for f in everything if f.signature not in known]
    listed = [f for f in everything if f.signature in known]

    def verdicts(f):
        return ", ".join(f"{p}: {v}" for p, v in sorted(f.meta.get("verdicts", {}).items())) or "-"

    def smallest(f):
        n = f.smallest_events
        return f"{n} event{'s' * (n != 1)}: {f.path / 'smallest.txt'}"

    plain = not console.is_terminal
    rows = [(f.signature, " ".join(f.meta.get("impls", [])), verdicts(f), f.meta.get("function", "?"),
             f"{f.hits:,}", smallest(f), export_command(f)) for f in found]
    if found:
        _table(console, plain, f"{title}: {len(found)} root cause(s) in {store.root}"
               + (f", besides {len(listed)} known" if listed else ""),
               ("root cause", "implementations", "verdict(s)", "blamed", "hits", "smallest", "export"), rows)
    if listed:
        rows = [(f.signature, " ".join(f.meta.get("impls", [])), known[f.signature], f"{f.hits:,}",
                 f.path.name + "/smallest.txt") for f in listed]
        _table(console, plain, f"known: {len(listed)} root cause(s) of the known-divergences list",
               ("root cause", "implementations", "reason", "hits", "path"), rows)


def _table(console, plain: bool, title: str, header: tuple, rows: list) -> None:
    if plain:  # a log file or a pipe: one line a row, tab-separated, greppable
        console.print(title, markup=False, highlight=False, soft_wrap=True)
        for row in [header] + rows:
            console.print("\t".join(row), markup=False, highlight=False, soft_wrap=True)
        return
    from rich.table import Table

    table = Table(title=title, show_lines=False)
    for i, h in enumerate(header):
        table.add_column(h, overflow="fold", ratio=4 if i == 0 else None,
                         justify="right" if h in ("hits", "signatures", "smallest") else "left")
    for row in rows:
        table.add_row(*row)
    console.print(table)


# ------------------------------------------------------------ atheris --

_EXECS = re.compile(r"^#(\d+)[\s:]")
_FIELDS = {k: re.compile(rf"\b{re.escape(k)}: (\d+)") for k in ("cov", "ft", "corp", "exec/s")}
_FORK_CRASH = re.compile(r"oom/timeout/crash: (\d+)/(\d+)/(\d+)")


def atheris_available(python: str = sys.executable) -> bool:
    if python == sys.executable:
        return importlib.util.find_spec("atheris") is not None
    return subprocess.run([python, "-c", "import atheris"], capture_output=True).returncode == 0


def write_wrapper(path: Path, python: str = sys.executable) -> Path:
    """An executable that runs the target with this interpreter (libFuzzer
    re-runs argv[0] through `sh` in fork mode, so `python -m` cannot do)."""
    text = (f"#!{python}\n"
            "# Generated by `evdiff fuzz`: the atheris target with the interpreter that has evdiff.\n"
            "import sys\n"
            f"sys.path.insert(0, {str(ROOT)!r})\n"
            "from fuzz.evdiff_fuzzer import main\n"
            "sys.exit(main(sys.argv))\n")
    if not path.exists() or path.read_text() != text:
        fstore.write_atomic(path, text)
    path.chmod(0o755)
    return path


def _watch_parent(proc: subprocess.Popen, read_fd: int) -> None:
    """Nothing of the campaign outlives `evdiff fuzz`, even after a SIGKILL:
    libFuzzer runs in its own process group (a new session), and every
    process of it (fork-mode jobs, `sh`, workers) holds `read_fd`, the read
    end of a pipe whose write end only this process holds.  When it closes
    (this process ends, however), the kernel signals the group with SIGIO
    (O_ASYNC, F_SETOWN to the group), whose default action ends a process;
    nothing there handles SIGIO."""
    import fcntl

    fcntl.fcntl(read_fd, fcntl.F_SETOWN, -proc.pid)
    fcntl.fcntl(read_fd, fcntl.F_SETFL, fcntl.fcntl(read_fd, fcntl.F_GETFL) | os.O_ASYNC)


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def libfuzzer_command(opts: Options, target: Path, corpus: Path, seeds_dir: Path | None, dict_path: Path,
                      artifacts: Path) -> list[str]:
    target, corpus, dict_path, artifacts = (p.resolve() for p in (target, corpus, dict_path, artifacts))
    cmd = [str(target), str(corpus)]
    if seeds_dir is not None:
        cmd.append(str(seeds_dir.resolve()))
    cmd += [f"-dict={dict_path}", f"-max_len={1 + binary.RECORD * binary.MAX_EVENTS}",
            f"-artifact_prefix={artifacts}/", "-print_final_stats=1"]
    if opts.time:
        cmd.append(f"-max_total_time={int(max(1, opts.time))}")
    if opts.jobs > 1 and opts.parallel == "fork":
        cmd += [f"-fork={opts.jobs}", "-ignore_crashes=1"]
    elif opts.jobs > 1:
        cmd += [f"-jobs={opts.jobs}", f"-workers={opts.jobs}"]
    return cmd + list(opts.extra)


def set_aside_invalid(store: fstore.FindingStore) -> None:
    """Findings whose finding.json cannot be read or has the wrong shape are
    renamed aside (kept), with a warning; the campaign goes on."""
    for path in store.set_aside_invalid():
        print(f"evdiff: warning: {path.name.split('.unreadable-')[0]}/finding.json is unreadable or not a "
              f"finding; set aside as {path}", file=sys.stderr)


def run_atheris(opts: Options, console, lock_fd: int) -> int:
    if not atheris_available():
        raise EvdiffError(targetenv.INSTALL.format(python=sys.executable))
    store = fstore.FindingStore(opts.findings, opts.max_examples)
    store.clean_stale()
    set_aside_invalid(store)
    state = store.state
    corpus = Path(opts.corpus or opts.findings / "corpus")
    corpus.mkdir(parents=True, exist_ok=True)
    artifacts = state / "artifacts"
    artifacts.mkdir(exist_ok=True)
    target = write_wrapper(state / "target")
    seeds_dir = None
    if opts.seeds is not None and seeds.seed_files(opts.seeds):
        seeds_dir = state / "seeds"
        seeds.write_binary_seeds(seeds_dir, opts.seeds)
    dict_path = state / "evdiff.dict"
    fstore.write_atomic(dict_path, seeds.dictionary(opts.seeds))
    cmd = libfuzzer_command(opts, target, corpus, seeds_dir, dict_path, artifacts)

    env = dict(os.environ)
    env[targetenv.FINDINGS] = str(store.root.resolve())
    env.pop(targetenv.RAISE, None)
    if opts.impls:
        env[targetenv.IMPLS] = opts.impls
    # The fuzzer runs in .evdiff/workers: relative entries of PYTHONPATH would move.
    paths = [str(ROOT)] + [str(Path(p).resolve()) for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    # libFuzzer's fork mode keeps its jobs' inputs and logs in a temporary
    # directory: here, not in the system's (left over only by a SIGKILL,
    # and removed at the next start: this campaign holds the lock).
    tmp = state / "libfuzzer-tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    env["TMPDIR"] = str(tmp.resolve())

    mon = Monitor(opts, store, "atheris", console)
    crashes_before = _artifacts(artifacts, "crash-")
    log = open(state / "libfuzzer.log", "a", buffering=1)
    log.write(f"\n==== {fstore.now()} {' '.join(cmd)}\n")
    if not opts.quiet:
        mon.note(f"evdiff fuzz: {' '.join(cmd)}")
        mon.note(f"  findings: {store.root}  corpus: {corpus}  log: {state / 'libfuzzer.log'}")
    workdir = state / "workers"  # -jobs mode: the workers' logs, fuzz-<n>.log
    workdir.mkdir(exist_ok=True)
    for old in workdir.glob("fuzz-*.log"):
        old.unlink()
    watch_r, watch_w = os.pipe()
    try:
        # The campaign lock goes to every process of libFuzzer's, so that no
        # campaign starts beside one of them (see `campaign_lock`).
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True,
                                cwd=workdir, errors="replace", bufsize=1, start_new_session=True,
                                pass_fds=(watch_r, lock_fd))
        _watch_parent(proc, watch_r)
    except BaseException:
        os.close(watch_w)
        raise
    finally:
        os.close(watch_r)
    seen = {"inited": False, "warned": False, "no_cov": False}
    tail: list[str] = []

    fork = opts.jobs > 1 and opts.parallel == "fork"
    worker_execs: dict[str, int] = {}

    def handle(line: str, source: str | None = None) -> None:
        """One line of libFuzzer's output (`source`: a -jobs worker's log)."""
        st = mon.stats
        m = _EXECS.match(line)
        if m:
            if source is None:
                st.execs = max(st.execs, int(m.group(1)))
            else:
                worker_execs[source] = max(worker_execs.get(source, 0), int(m.group(1)))
                st.execs = sum(worker_execs.values())
            for key, rx in _FIELDS.items():
                v = rx.search(line)
                if v and key == "cov":
                    st.cov = max(st.cov, int(v.group(1)))
                elif v and key == "ft":
                    st.ft = max(st.ft, int(v.group(1)))
                elif v and key == "corp" and fork:
                    st.corpus = int(v.group(1))
            c = _FORK_CRASH.search(line)
            if c:
                st.harness_crashes = int(c.group(3))
            if "INITED" in line:
                seen["inited"] = True
        elif line.startswith("evdiff-target:") or "COVERAGE WILL NOT GROW" in line:
            if "implementations:" in line:
                st.implementations = line.split("implementations:", 1)[1].split(";")[0].strip().split(", ")
            if not (opts.quiet or opts.jobs > 1 and seen["inited"]):
                mon.note(line.rstrip())
            if "COVERAGE WILL NOT GROW" in line:
                seen["no_cov"] = True
        elif (line.startswith(("ERROR:", "Traceback", "=== Uncaught")) or line.startswith("==") and "ERROR" in line) \
                and not opts.quiet:
            mon.note(line.rstrip(), style="red")

    def reader():
        for line in proc.stdout:
            log.write(line)
            tail.append(line)
            del tail[:-40]
            handle(line)

    offsets: dict[Path, int] = {}

    def poll_workers():
        """-jobs/-workers: each worker writes fuzz-<n>.log in `workdir`."""
        for path in sorted(workdir.glob("fuzz-*.log")):
            with open(path, "r", errors="replace") as f:
                f.seek(offsets.get(path, 0))
                chunk = f.read()
                complete = chunk[:chunk.rfind("\n") + 1]
                offsets[path] = offsets.get(path, 0) + len(complete.encode(errors="replace"))
            for line in complete.splitlines(keepends=True):
                handle(line, str(path))

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    mon.stats.status = "running"
    mon.start()
    interrupted = stopped = False
    try:
        while proc.poll() is None:
            time.sleep(0.5)
            if opts.jobs > 1 and not fork:
                poll_workers()
            mon.stats.corpus = mon.stats.corpus if fork else _count(corpus)
            mon.update()
            _coverage_check(mon, seen)
            if opts.time and mon.stats.elapsed > opts.time + 60 and not stopped:  # libFuzzer did not stop
                stopped = True
                _signal_group(proc, signal.SIGTERM)
    except KeyboardInterrupt:
        interrupted = True
        _signal_group(proc, signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    finally:
        os.close(watch_w)  # and every process left in libFuzzer's group ends (`_watch_parent`)
        thread.join(timeout=5)
        if opts.jobs > 1 and not fork:
            poll_workers()
        store.flush()
        st = mon.stats
        st.corpus = _count(corpus)
        died = not (interrupted or stopped) and proc.returncode not in (0, None)
        st.status = "interrupted" if interrupted else "died" if died else "done"
        if died and proc.returncode < 0:
            st.signal = signal.Signals(-proc.returncode).name
        elif died:
            st.exit_code = proc.returncode
        mon.update(force=True)
        mon.stop()
        log.close()
    _coverage_check(mon, seen, final=True)
    new_crashes = _artifacts(artifacts, "crash-") - crashes_before
    if new_crashes and not opts.quiet:
        mon.note(f"evdiff fuzz: {len(new_crashes)} crash artifact(s) in {artifacts}: the harness itself "
                 "raised (a bug in evdiff, not a divergence; implementations' crashes are findings). "
                 f"Reproduce: {target} {sorted(new_crashes)[0]}", style="red")
    ooms = _artifacts(artifacts, "oom-")
    if ooms and not opts.quiet:
        mon.note(f"evdiff fuzz: {len(ooms)} oom-* artifact(s): memory grown over hours, usually noise that "
                 "replays clean; not findings", style="yellow")
    summary(store, console, known=opts.known)
    st = mon.stats
    if st.status == "died" and not seen["inited"]:
        raise EvdiffError(f"libFuzzer stopped before it started fuzzing (exit {proc.returncode}); "
                          f"last lines of {state / 'libfuzzer.log'}:\n" + "".join(tail[-15:]))
    if st.status == "died":
        how = f"was killed by {st.signal}" if st.signal else f"exited with code {st.exit_code}"
        hint = " (the OOM killer? see `dmesg`)" if st.signal == "SIGKILL" else ""
        raise EvdiffError(f"{store.root}: libFuzzer {how}{hint} after {_hms(st.elapsed)}"
                          + (f" of {_hms(opts.time)}" if opts.time else "")
                          + f": the campaign did not finish (status \"died\" in stats.json; log: "
                          f"{state / 'libfuzzer.log'}); what it found is kept, rerun to resume")
    return 0


def _coverage_check(mon: Monitor, seen: dict, final: bool = False) -> None:
    st = mon.stats
    if seen["warned"] or not seen["inited"]:
        return
    if (final or st.elapsed >= COVERAGE_CHECK_SECONDS) and (st.cov < MIN_COVERAGE or seen["no_cov"]):
        seen["warned"] = True
        bar = "!" * 78
        why = (f"only {st.cov} coverage features after {_hms(st.elapsed)} (expected well over {MIN_COVERAGE})"
               if st.cov < MIN_COVERAGE else "the target reports modules without instrumentation")
        mon.note(f"{bar}\nevdiff fuzz: COVERAGE IS NOT GROWING where it should: {why}.\n"
                 "  Code imported outside atheris.instrument_imports() is invisible to libFuzzer, which then "
                 "fuzzes it blind.\n"
                 f"  See the target's start-up lines in {mon.store.state / 'libfuzzer.log'}.\n{bar}",
                 style="bold red")
    elif st.elapsed >= COVERAGE_CHECK_SECONDS:
        seen["warned"] = True  # checked: fine


def _count(d: Path) -> int:
    try:
        return sum(1 for _ in os.scandir(d))
    except OSError:
        return 0


def _artifacts(d: Path, prefix: str) -> set[str]:
    return {str(p) for p in d.glob(prefix + "*")} if d.is_dir() else set()


# -------------------------------------------------------------- entry --

LOCK = "campaign.lock"
LOCK_WAIT = 3.0  # seconds: the processes of a campaign just killed take a moment to end


@contextlib.contextmanager
def campaign_lock(findings: Path, shared: bool = False):
    """Hold `<findings>/.evdiff/campaign.lock` for the campaign (an flock;
    the file names the PID of the last holder).  An atheris campaign holds
    it exclusively, and so does every process of its libFuzzer (the file
    descriptor is inherited); Hypothesis campaigns share it (several may
    run on one store).  A campaign that cannot take it refuses to start:
    two fuzzers on one corpus and one set of generated files, or a restart
    beside the jobs of a campaign not yet gone, would trample each other.
    Yields the lock's file descriptor."""
    import fcntl

    state = findings / fstore.STATE_DIR
    try:
        state.mkdir(parents=True, exist_ok=True)
        fd = os.open(state / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as e:
        raise EvdiffError(f"{findings}: cannot write the findings directory ({e.strerror})") from None
    try:
        deadline = time.monotonic() + LOCK_WAIT
        while True:
            try:
                fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
                    raise EvdiffError(f"{findings}: another campaign is running on this findings directory "
                                      f"(PID {holder}); stop it first, or give another --findings") from None
                time.sleep(0.1)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield fd
    finally:
        os.close(fd)


def run(opts: Options, console=None) -> int:
    if console is None:
        from rich.console import Console

        console = Console(stderr=False)
    if opts.jobs < 1:
        raise EvdiffError(f"--jobs {opts.jobs}: give at least 1")
    if opts.parallel not in ("fork", "workers"):
        raise EvdiffError(f"--parallel {opts.parallel}: fork or workers")
    if opts.time < 0:
        raise EvdiffError(f"--time {opts.time}: give a duration of at least 1 second (0: until Ctrl-C)")
    if opts.max_examples < 0:
        raise EvdiffError(f"--max-examples {opts.max_examples}: give 0 or more")
    if opts.seeds is not None and not Path(opts.seeds).is_dir():
        raise EvdiffError(f"--seeds {opts.seeds}: no such directory")
    bare = [a for a in opts.extra if not a.startswith("-")]
    if bare:
        raise EvdiffError(f"after --: {' '.join(bare)}: libFuzzer flags start with '-' (libFuzzer would take "
                          "a bare word as one more corpus directory; use --corpus DIR)")
    opts.findings = Path(opts.findings)
    if opts.findings.exists() and not opts.findings.is_dir():
        raise EvdiffError(f"--findings {opts.findings}: exists and is not a directory")
    if opts.engine not in ("atheris", "hypothesis"):
        raise EvdiffError(f"--engine {opts.engine}: one of atheris, hypothesis")
    if opts.engine == "hypothesis" and opts.jobs > 1:
        raise EvdiffError("--jobs is libFuzzer's fork mode (atheris); for more Hypothesis processes start "
                          "`evdiff fuzz --engine hypothesis` several times on the same --findings: they share "
                          "the store and the example database")
    if opts.engine == "hypothesis" and opts.extra:
        raise EvdiffError(f"{' '.join(opts.extra)}: flags after -- go to libFuzzer; --engine hypothesis "
                          "takes none")
    _check_impls(opts.impls)
    with campaign_lock(opts.findings, shared=opts.engine == "hypothesis") as lock_fd:
        if opts.engine == "atheris":
            return write_report(opts, console, run_atheris(opts, console, lock_fd))
        from fuzz.properties import run_campaign

        return write_report(opts, console, run_campaign(opts, console))


def _check_impls(impls: str | None) -> None:
    """Every implementation the campaign is to run loads (`--impls`, and
    those registered through EVDIFF_EXTRA_IMPLS), before anything starts:
    a misspelt name is an error here, not one inside libFuzzer."""
    from impls import api

    try:
        targetenv.register_extra(api)
    except ValueError as e:
        raise EvdiffError(str(e)) from None
    for name in targetenv.impl_names(api, {targetenv.IMPLS: impls or ""}):
        api.load(name)


def write_report(opts: Options, console, status: int) -> int:
    """The morning's page (`fuzz.report`), rewritten at the end of every
    run, a resumed one included, with every finding of the store; says
    where it is.  Returns `status`."""
    from fuzz import report

    path = report.write(opts.findings, known=opts.known)
    console.print(f"report: {path}", markup=False, highlight=False, soft_wrap=True)
    return status


def parse_duration(text: str) -> float:
    """`90`, `90s`, `15m`, `8h`, `1h30m` to seconds."""
    m = re.fullmatch(r"\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s?)?\s*", text)
    if not text.strip() or not m or not any(m.groups()):
        raise EvdiffError(f"--time {text!r}: a duration like 60, 90s, 15m, 8h or 1h30m")
    h, mi, s = (float(g) if g else 0.0 for g in m.groups())
    return h * 3600 + mi * 60 + s
