"""The property every implementation must satisfy, for both engines: on any
scenario, it agrees with the reference (or with one of the outcomes the
reference allows), raises nothing, and sounds no alarm.

`implementations_agree` is a Hypothesis test over `fuzz.strategies.scenarios`.
The test suite runs it with a small budget (`tests/test_properties.py`; under
`CI=1` Hypothesis's `ci` profile makes it derandomised, without a database),
`implementations_agree.hypothesis.fuzz_one_input(data)` lets a byte-level
fuzzer drive the same definition.  A divergence is raised by
`fuzz.failures.raise_divergence`, from frames that follow its signature, so
Hypothesis treats distinct signatures as distinct bugs and shrinks each.

`evdiff fuzz --engine hypothesis` (`run_campaign`) runs the same check with a
large budget, in batches until the time is up:

* every divergence seen (in generation or in shrinking) is recorded in the
  findings store, as the atheris engine does,
* a batch fails only on signatures Hypothesis has not yet shrunk (the store
  marks a finding `"shrunk": true` once it has), so a known bug does not end
  every batch early; Hypothesis shrinks each new one to its minimal form,
  which becomes the finding's smallest input,
* the example database lives in `<findings>/.evdiff/hypothesis`: a batch
  killed while shrinking resumes there, and failing examples replay first;
  Hypothesis's other files (its `.hypothesis/` directory) go to
  `<findings>/.evdiff/hypothesis-home`, not to the current directory.
  The database is a cache (Hypothesis may drop entries on upgrade); the
  findings store, with its text and binary inputs, is the record, and each
  campaign starts by replaying every finding's smallest input from it.
"""
from __future__ import annotations

import contextlib
import time
from pathlib import Path

from hypothesis import HealthCheck, Phase, Verbosity, given, settings

from fuzz import oracle
from fuzz.failures import DivergenceFound, raise_divergence
from fuzz.strategies import scenarios
from fuzz.text import read_scenario

#: Events per generated scenario.
MAX_EVENTS = 16
#: Implementations `implementations_agree` compares (None: every registered one).
NAMES: list[str] | None = None


def check(scenario, names=None, store=None, known=frozenset()) -> None:
    """The property on one scenario.  Records every divergence in `store`
    (if given); raises `DivergenceFound` for the first root cause
    (`fuzz.causes`) whose signature is not in `known`."""
    report = oracle.compare(scenario, names)
    if report.divergences:
        if store is not None:
            store.record(report)
        fresh = [c for c in report.causes if c.signature not in known][:1]
        if fresh:
            raise_divergence(report, fresh[0])


@settings(deadline=None, max_examples=100, suppress_health_check=[HealthCheck.too_slow],
          phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink])
@given(scenarios(MAX_EVENTS))
def implementations_agree(scenario):
    """Every registered implementation agrees with the reference."""
    check(scenario, NAMES)


# ------------------------------------------------------------ campaign --


class _BatchOver(BaseException):
    """Raised inside the property to end a batch (time is up): not an
    `Exception`, so Hypothesis neither shrinks it nor reports it as a bug."""


#: A batch ends after this many seconds even while Hypothesis shrinks; the
#: database holds the shrink's progress and the next batch resumes it.
BATCH_SECONDS = 60.0


class _Campaign:
    """What the campaign property reads while a batch runs."""

    names: list[str] | None = None
    store = None
    known: frozenset = frozenset()
    monitor = None
    execs = 0
    batch_end = float("inf")


_ctx = _Campaign()


def campaign_test(batch_settings: settings):
    """The campaign's form of the property with a batch's settings.  Made
    anew per batch (settings cannot be changed on a test); its database key
    comes from the inner function's source, so it is the same every batch
    and every campaign, and failures replay first."""

    @batch_settings
    @given(scenarios(2 * MAX_EVENTS))
    def campaign_property(scenario):
        if time.monotonic() > _ctx.batch_end:
            raise _BatchOver
        _ctx.execs += 1
        try:
            check(scenario, _ctx.names, _ctx.store, _ctx.known)
        finally:
            if _ctx.monitor is not None:
                _ctx.monitor.stats.execs = _ctx.execs
                if _ctx.execs % 64 == 0:
                    _ctx.monitor.update()

    return campaign_property


def _failures(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        out = []
        for e in exc.exceptions:
            out += _failures(e)
        return out
    return [exc]


def replay_store(store, names) -> tuple[int, int]:
    """Run every finding's smallest input again; (replayed, still diverging)."""
    n = still = 0
    for f in store.findings():
        path = f.path / "smallest.txt"
        if not path.exists():
            continue
        n += 1
        report = oracle.compare(read_scenario(path), names)
        if report.divergences:
            store.record(report)
            still += any(c.signature == f.signature for c in report.causes)
    store.flush()
    return n, still


@contextlib.contextmanager
def _hypothesis_home(path):
    """Hypothesis's storage directory (default `./.hypothesis`) set to
    `path` for a campaign, and set back after it."""
    from hypothesis import configuration

    home = configuration.storage_directory()
    previous = getattr(home, "home_directory", home)  # a Path before Hypothesis 6.1xx
    configuration.set_hypothesis_home_dir(path)
    try:
        yield
    finally:
        configuration.set_hypothesis_home_dir(previous)


def run_campaign(opts, console) -> int:
    from fuzz.findings import STATE_DIR

    with _hypothesis_home(Path(opts.findings) / STATE_DIR / "hypothesis-home"):
        return _run_campaign(opts, console)


def _run_campaign(opts, console) -> int:
    from hypothesis.database import DirectoryBasedExampleDatabase

    from fuzz import campaign, targetenv
    from fuzz.findings import FindingStore
    from impls import api

    targetenv.register_extra(api)
    names = targetenv.impl_names(api, {targetenv.IMPLS: opts.impls or ""})
    for n in names:
        api.load(n)
    # Hypothesis shrinks each new signature itself (and marks it "shrunk"),
    # so the store does not minimise on top of it.
    store = FindingStore(opts.findings, opts.max_examples, engine="hypothesis", minimise=False)
    store.clean_stale()
    campaign.set_aside_invalid(store)
    mon = campaign.Monitor(opts, store, "hypothesis", console)
    mon.stats.implementations = names
    db = DirectoryBasedExampleDatabase(str(store.state / "hypothesis"))
    if not opts.quiet:
        mon.note(f"evdiff fuzz --engine hypothesis: implementations {', '.join(names)}; findings: {store.root}; "
                 f"example database: {store.state / 'hypothesis'}")
        if len(names) < 2:
            mon.note("evdiff fuzz: only the reference is registered: no divergence can be found")
    replayed, still = replay_store(store, names)
    if replayed and not opts.quiet:
        mon.note(f"replayed {replayed} known finding(s): {still} still diverge with the same signature")

    _ctx.names, _ctx.store, _ctx.monitor, _ctx.execs = names, store, mon, 0
    t_end = time.monotonic() + opts.time if opts.time else float("inf")
    batch = 200
    mon.stats.status = "running"
    mon.start()
    interrupted = False
    try:
        while time.monotonic() < t_end:
            _ctx.known = frozenset(f.signature for f in store.findings() if f.meta.get("shrunk"))
            started, execs0 = time.monotonic(), _ctx.execs
            _ctx.batch_end = min(t_end, started + BATCH_SECONDS)
            test = campaign_test(settings(
                database=db, max_examples=batch, deadline=None, derandomize=False, report_multiple_bugs=False,
                verbosity=Verbosity.quiet, print_blob=False,
                phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
                suppress_health_check=list(HealthCheck),
            ))
            try:
                test()
            except _BatchOver:
                pass
            except KeyboardInterrupt:
                raise
            except BaseException as e:  # noqa: BLE001 -- a batch's failures are the findings
                for f in _failures(e):
                    if isinstance(f, DivergenceFound):
                        store.record(f.report)  # Hypothesis's minimal form
                        store.mark(f.signature, shrunk=True)
                    elif not opts.quiet:
                        mon.note(f"evdiff fuzz: the harness itself failed (a bug in evdiff, not a divergence): "
                                 f"{type(f).__name__}: {f}", style="red")
            store.flush()
            mon.update()
            # Size the next batch to about 20 s, and never past the end.
            rate = (_ctx.execs - execs0) / max(1e-3, time.monotonic() - started)
            left = t_end - time.monotonic()
            batch = int(max(50, min(rate * 20, rate * left if left != float("inf") else rate * 20)))
    except KeyboardInterrupt:
        interrupted = True
    finally:
        store.flush()
        mon.stats.status = "interrupted" if interrupted else "done"
        mon.update(force=True)
        mon.stop()
        _ctx.monitor = _ctx.store = None
    campaign.summary(store, console, known=opts.known)
    return 0


def fuzz_one_input(data: bytes) -> None:
    """Drive the property from bytes (Hypothesis's own format for them)."""
    implementations_agree.hypothesis.fuzz_one_input(data)

