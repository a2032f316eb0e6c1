"""`evdiff fuzz` with atheris, for real: the target, fork mode, SIGKILL and
resume, the start-up coverage check.  Implementations with planted bugs
(tests/fakes.py) are registered in the fuzzer's processes through
EVDIFF_EXTRA_IMPLS.  Behaviour only: no test depends on how fast it runs."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fuzz import binary, campaign, findings, seeds
from fuzz.cli import main
from fuzz.text import read_scenario

ROOT = Path(__file__).resolve().parent.parent
atheris = pytest.importorskip("atheris")
PLANTED = "prepatch=fakes:DropVectoringAndShutdown,postpatch=fakes:CrashOnMigrate"


def _env(**extra):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "tests")])
    env["EVDIFF_EXTRA_IMPLS"] = PLANTED
    env.pop("EVDIFF_FINDINGS", None)
    env.update(extra)
    return env


def _fuzz(*args, timeout=120, **env):
    return subprocess.run([sys.executable, "-m", "fuzz.cli", "fuzz", *args], cwd=ROOT, env=_env(**env),
                          capture_output=True, text=True, timeout=timeout)


def _seed_bins(tmp_path):
    d = tmp_path / "inputs"
    seeds.write_binary_seeds(d)
    return d


# ------------------------------------------------------------ the target --


def test_target_raises_each_divergence_from_its_own_frames(tmp_path):
    """Without a findings store (ClusterFuzzLite), the first divergence stops
    libFuzzer, raised from frames named after its signature."""
    seed = _seed_bins(tmp_path) / "bug-a-lost-first-exception-vmx.bin"
    r = subprocess.run([sys.executable, "-m", "fuzz.evdiff_fuzzer", str(seed)], cwd=tmp_path, env=_env(),
                       capture_output=True, text=True, timeout=60)
    out = r.stdout + r.stderr  # atheris prints the exception on stdout
    assert r.returncode != 0
    assert "DivergenceFound" in out and '<evdiff signature ' in out
    assert "IDT-vectoring" in out and "l1.vmentry inject=intr(0x20)" in out


def test_target_records_and_goes_on(tmp_path):
    inputs = _seed_bins(tmp_path)
    store = tmp_path / "findings"
    r = subprocess.run([sys.executable, "-m", "fuzz.evdiff_fuzzer", *map(str, sorted(inputs.iterdir()))],
                       cwd=tmp_path, env=_env(EVDIFF_FINDINGS=str(store)), capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "instrumented" in r.stderr and "COVERAGE WILL NOT GROW" not in r.stderr
    found = findings.FindingStore(store).findings()
    assert {"l1", "shutdown"} <= {f.meta["field"] for f in found}
    # Every hit counted, the last ones flushed when libFuzzer exits (C exit(), no Python atexit):
    # count them again in-process with the same test doubles.
    from fakes import CrashOnMigrate, DropVectoringAndShutdown
    from fuzz import oracle
    from impls import api

    expected: dict[str, int] = {}
    saved = dict(api.IMPLEMENTATIONS), dict(api._loaded)
    try:
        api.IMPLEMENTATIONS.update(prepatch="fakes:DropVectoringAndShutdown", postpatch="fakes:CrashOnMigrate")
        api._loaded.pop("prepatch", None), api._loaded.pop("postpatch", None)
        for p in sorted(inputs.iterdir()):
            for c in oracle.compare(binary.decode(p.read_bytes())).causes:  # each root cause
                expected[c.signature] = expected.get(c.signature, 0) + 1
    finally:
        api.IMPLEMENTATIONS.clear(), api.IMPLEMENTATIONS.update(saved[0])
        api._loaded.clear(), api._loaded.update(saved[1])
    assert {f.signature: f.hits for f in found} == expected


def test_target_on_the_reference_alone_runs_every_seed():
    inputs = sorted((ROOT / "corpus" / "seeds").glob("*.txt"))
    with_bins = [binary.encode(read_scenario(p)) for p in inputs]
    assert len(with_bins) == len(inputs)
    env = _env(EVDIFF_IMPLS="reference")
    env.pop("EVDIFF_EXTRA_IMPLS")
    r = subprocess.run([sys.executable, "-m", "fuzz.evdiff_fuzzer", "-runs=200", "-max_len=769"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "only the reference" in r.stderr


def test_uninstrumented_target_is_called_out(tmp_path):
    r = subprocess.run([sys.executable, "-m", "fuzz.evdiff_fuzzer", "-runs=10"], cwd=tmp_path,
                       env=_env(EVDIFF_NO_INSTRUMENT="1", EVDIFF_INSTRUMENT="all"), capture_output=True, text=True,
                       timeout=60)
    assert "COVERAGE WILL NOT GROW" in r.stderr and "impls.reference.model" in r.stderr


@pytest.mark.parametrize("scope,trace,instrumented", [
    ("all", "1", "fuzz.oracle"), ("impls", "0", "impls.reference.model"), ("none", "", None)])
def test_instrumentation_scope_is_what_the_target_says(tmp_path, scope, trace, instrumented):
    """`EVDIFF_INSTRUMENT` decides which modules carry atheris's counters;
    with none, guidance is the coverage and the target says so.  Findings
    go to a store: ten mutants from nothing may well diverge (the mutator
    starts afresh from nested prologues), which would otherwise stop it."""
    r = subprocess.run([sys.executable, "-m", "fuzz.evdiff_fuzzer", "-runs=10"], cwd=tmp_path,
                       env=_env(EVDIFF_INSTRUMENT=scope, EVDIFF_TRACE_CMP=trace, EVDIFF_FINDINGS=str(tmp_path / "f")),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    line = next(x for x in r.stderr.splitlines() if x.startswith("evdiff-target: instrumented"))
    if instrumented is None:
        assert line.startswith("evdiff-target: instrumented 0 modules") and "guidance on" in r.stderr
    else:
        assert instrumented in line
        assert ("fuzz.oracle" in line) == (scope == "all")
    assert "COVERAGE WILL NOT GROW" not in r.stderr
    assert f"instrumented: {scope}" in r.stderr
    assert ("comparisons not traced" in r.stderr) == (trace == "0")


def test_an_unknown_instrumentation_scope_is_refused(tmp_path):
    r = subprocess.run([sys.executable, "-m", "fuzz.evdiff_fuzzer", "-runs=1"], cwd=tmp_path,
                       env=_env(EVDIFF_INSTRUMENT="most"), capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "EVDIFF_INSTRUMENT=most" in r.stderr


# ---------------------------------------------------------- campaigns --


def test_fork_mode_finds_the_planted_bugs_as_distinct_signatures(tmp_path):
    out = tmp_path / "findings"
    r = _fuzz("--time", "12", "--jobs", "2", "--parallel", "fork", "--findings", str(out), "--quiet")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    log = (out / ".evdiff" / "libfuzzer.log").read_text()
    assert "-fork=2" in log and "fuzz target exited" not in log
    store = findings.FindingStore(out)
    sigs = store.signatures()
    fields = {f.meta["field"].split("@")[0] for f in store.findings()}
    assert {"l1", "shutdown"} <= fields and any(f.startswith("crash:KeyError") for f in fields)
    assert len(sigs) < 500  # a short list, not one file per hit
    assert not list((out / ".evdiff" / "artifacts").glob("crash-*"))  # divergences are not libFuzzer crashes
    stats = json.loads((out / "stats.json").read_text())
    assert stats["status"] == "done" and stats["findings"] == len(sigs) and stats["execs"] > 0
    assert "root cause(s)" in r.stdout and "smallest.txt" in r.stdout
    assert (out / "plot_data.csv").read_text().startswith("unix_time,")
    assert r.stdout.rstrip().endswith(f"report: {out / 'report.html'}")
    assert all(f'id="h-{f.path.name}"' in (out / "report.html").read_text() for f in store.findings())


def test_jobs_run_two_workers_into_one_store_by_default(tmp_path):
    out = tmp_path / "findings"
    r = _fuzz("--time", "10", "--jobs", "2", "--findings", str(out), "--quiet")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert len(list((out / ".evdiff" / "workers").glob("fuzz-*.log"))) == 2
    stats = json.loads((out / "stats.json").read_text())
    assert stats["execs"] > 0 and stats["findings"] == len(findings.FindingStore(out).signatures()) > 0


def test_sigkill_then_restart_loses_nothing_and_duplicates_nothing(tmp_path):
    out = tmp_path / "findings"
    proc = subprocess.Popen([sys.executable, "-m", "fuzz.cli", "fuzz", "--time", "120", "--findings", str(out),
                             "--quiet"], cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 100  # generous: a loaded machine is slow to its 3 findings
        while time.monotonic() < deadline and len(findings.FindingStore(out).findings()) < 3:
            time.sleep(0.2)
        time.sleep(1.0)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    time.sleep(0.5)  # the fuzzer dies with its parent (PR_SET_PDEATHSIG)
    before = {f.path.name: f for f in findings.FindingStore(out).findings()}
    assert len(before) >= 3
    corpus_before = set(os.listdir(out / "corpus"))
    r = _fuzz("--time", "5", "--findings", str(out), "--quiet")
    assert r.returncode == 0, r.stdout[-2000:]
    after = {f.path.name: f for f in findings.FindingStore(out).findings()}
    assert set(before) <= set(after)
    for name, f in before.items():
        assert after[name].signature == f.signature and after[name].hits >= f.hits
        assert after[name].meta["first_seen"] == f.meta["first_seen"]
        assert after[name].smallest_events <= f.smallest_events
        assert len(list((after[name].path / "examples").glob("*.txt"))) <= findings.MAX_EXAMPLES
    assert len({f.signature for f in after.values()}) == len(after)
    assert corpus_before <= set(os.listdir(out / "corpus"))
    assert not list(out.rglob(".tmp-*"))


def test_ctrl_c_writes_final_stats_and_the_summary(tmp_path):
    out = tmp_path / "findings"
    proc = subprocess.Popen([sys.executable, "-m", "fuzz.cli", "fuzz", "--findings", str(out)], cwd=ROOT,
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (out / "stats.json").exists():
        time.sleep(0.2)
    time.sleep(2)
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, output[-2000:]
    stats = json.loads((out / "stats.json").read_text())
    assert stats["status"] == "interrupted"
    assert "root cause(s)" in output or "no findings" in output


# ------------------------------------------------------- options, errors --


def test_missing_atheris_says_how_to_install_and_offers_hypothesis(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(campaign, "atheris_available", lambda python=None: False)
    assert main(["fuzz", "--time", "1", "--findings", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "pip install 'atheris" in err and "--engine hypothesis" in err


@pytest.mark.parametrize("args, message", [
    (["--time", "soon"], "a duration like"),
    (["--jobs", "0"], "at least 1"),
    (["--seeds", "/nonexistent"], "no such directory"),
    (["--", "corpus2"], "libFuzzer flags start with '-'"),
    (["--engine", "hypothesis", "--jobs", "2"], "several times on the same --findings"),
    (["--engine", "hypothesis", "--", "-runs=1"], "takes none"),
])
def test_bad_options_get_a_clear_error(tmp_path, capsys, args, message):
    assert main(["fuzz", "--findings", str(tmp_path / "f"), *args]) == 2
    assert message in capsys.readouterr().err


def test_durations():
    assert [campaign.parse_duration(t) for t in ("60", "90s", "15m", "8h", "1h30m")] == [60, 90, 900, 28800, 5400]


def test_libfuzzer_command_passes_the_parallel_mode_and_extra_flags(tmp_path):
    opts = campaign.Options(time=30, jobs=3, extra=["-use_value_profile=1"])
    cmd = campaign.libfuzzer_command(opts, tmp_path / "t", tmp_path / "c", None, tmp_path / "d", tmp_path / "a")
    assert "-jobs=3" in cmd and "-workers=3" in cmd and "-max_total_time=30" in cmd and "-fork=3" not in cmd
    assert cmd[-1] == "-use_value_profile=1" and f"-max_len={1 + binary.RECORD * binary.MAX_EVENTS}" in cmd
    fork = campaign.libfuzzer_command(campaign.Options(time=30, jobs=3, parallel="fork"), tmp_path / "t",
                                      tmp_path / "c", None, tmp_path / "d", tmp_path / "a")
    assert "-fork=3" in fork and "-ignore_crashes=1" in fork and "-jobs=3" not in fork


def test_wrapper_is_an_executable_with_this_interpreter(tmp_path):
    w = campaign.write_wrapper(tmp_path / "target")
    assert w.read_text().startswith(f"#!{sys.executable}\n") and os.access(w, os.X_OK)


# ------------------------------------------------------------- seeds --


def test_shipped_dictionary_is_up_to_date():
    assert seeds.DICTIONARY.read_text() == seeds.dictionary(), \
        "fuzz/evdiff_fuzzer.dict is stale: run `python -m fuzz.seeds --dict fuzz/evdiff_fuzzer.dict`"


def test_binary_seeds_are_the_text_seeds(tmp_path):
    n = seeds.write_binary_seeds(tmp_path)
    texts = seeds.seed_files()
    assert n == len(texts) > 0
    for p in texts:
        assert binary.decode((tmp_path / f"{seeds.seed_name(p)}.bin").read_bytes()) == read_scenario(p)
    assert any(p.parent.name == "kvm-tests" for p in texts), "the seeds in corpus/seeds/kvm-tests/ are read too"


def test_target_does_not_raise_known_divergences_unless_asked(tmp_path):
    """A ClusterFuzzLite run stops at its first crash: a divergence the known
    list explains (corpus/known-divergences.txt) is not raised, unless
    EVDIFF_RAISE_KNOWN=1."""
    seed = _seed_bins(tmp_path) / "bug-a-lost-first-exception-svm.bin"
    env = _env(EVDIFF_IMPLS="prepatch")
    env.pop("EVDIFF_EXTRA_IMPLS")
    run = lambda **extra: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "fuzz.evdiff_fuzzer", str(seed)], cwd=tmp_path, env={**env, **extra},
        capture_output=True, text=True, timeout=60)
    quiet = run()
    assert quiet.returncode == 0, quiet.stdout[-2000:] + quiet.stderr[-2000:]
    assert "not in the known list" in quiet.stderr
    loud = run(EVDIFF_RAISE_KNOWN="1")
    assert loud.returncode != 0 and "DivergenceFound" in loud.stdout + loud.stderr


def test_target_reuses_the_report_of_a_scenario_it_just_ran(monkeypatch):
    """Two inputs that decode to one scenario (a kind byte is taken modulo
    the number of kinds) run the implementations once."""
    target = pytest.importorskip("fuzz.evdiff_fuzzer")
    ran = []
    real = target.oracle.compare
    monkeypatch.setattr(target, "NAMES", ["reference"])
    monkeypatch.setattr(target, "_RECENT", {})
    monkeypatch.setattr(target.oracle, "compare", lambda s, names: ran.append(s) or real(s, names))
    data = binary.encode(read_scenario(ROOT / "corpus" / "seeds" / "nested-nmi-exit-vmx.txt"))
    same = bytearray(data)
    same[1] += len(binary.SPECS)
    assert bytes(same) != data and binary.decode(bytes(same)) == binary.decode(data)
    target.TestOneInput(data)
    target.TestOneInput(bytes(same))
    assert len(ran) == 1
    other = bytearray(data)
    other[1] += 1
    target.TestOneInput(bytes(other))
    assert len(ran) == 2
