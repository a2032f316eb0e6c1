""".clusterfuzzlite/: what can be checked without a Docker engine.

build.sh runs for real, with the image's two tools replaced by shims: `pip3`
installs the project into a scratch directory (no dependencies, no network),
`compile_python_fuzzer` records its arguments and writes a wrapper that runs
the target with this interpreter instead of freezing it.  Then the wrapper
runs on the seed corpus from the zip, the way a fuzzing worker starts."""
import os
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from fuzz import binary, seeds
from fuzz.text import read_scenario

ROOT = Path(__file__).resolve().parent.parent
CFL = ROOT / ".clusterfuzzlite"
pytest.importorskip("atheris")


def test_project_files_follow_the_conventions():
    assert (CFL / "project.yaml").read_text().split() == ["language:", "python"]
    docker = (CFL / "Dockerfile").read_text()
    assert "FROM gcr.io/oss-fuzz-base/base-builder-python" in docker
    assert "COPY .clusterfuzzlite/build.sh $SRC/" in docker
    assert os.access(CFL / "build.sh", os.X_OK)
    # compile_python_fuzzer names the binary after the file: *_fuzzer.py
    assert (ROOT / "fuzz" / "evdiff_fuzzer.py").exists()
    # coverage builds prepend code to the target: a __future__ import would break it
    lines = (ROOT / "fuzz" / "evdiff_fuzzer.py").read_text().splitlines()
    assert not any(line.startswith("from __future__") for line in lines)


def _shim(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cflite")
    src, out, work, bindir, site = (tmp / n for n in ("src", "out", "work", "bin", "site"))
    for d in (out, work, bindir, site):
        d.mkdir()
    shutil.copytree(ROOT, src / "evdiff", ignore=shutil.ignore_patterns(
        ".venv", ".git", "findings", "__pycache__", ".hypothesis", ".pytest_cache", "*.egg-info", "build"))
    py = sys.executable
    _shim(bindir / "pip3", f'#!/bin/sh\nexec {py} -m pip install -q --no-deps '
                           f'--target {site} "$@"\n')
    _shim(bindir / "python3", f'#!/bin/sh\nPYTHONPATH={site} exec {py} "$@"\n')
    _shim(bindir / "compile_python_fuzzer", f"""#!/bin/sh
fuzzer=$1; shift
echo "$@" > {work}/pyinstaller-args
name=$(basename -s .py "$fuzzer")
printf '#!/bin/sh\\n# LLVMFuzzerTestOneInput for fuzzer detection.\\nPYTHONPATH={site} exec {py} %s "$@"\\n' \
    "$PWD/$fuzzer" > {out}/$name
chmod +x {out}/$name
""")
    env = dict(os.environ, SRC=str(src), OUT=str(out), WORK=str(work), PATH=f"{bindir}:{os.environ['PATH']}")
    env.pop("PYTHONPATH", None)
    r = subprocess.run(["bash", "-eu", str(src / "evdiff" / ".clusterfuzzlite" / "build.sh")], env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return tmp, out, work, site


def test_build_installs_the_project_with_every_implementation(built):
    tmp, out, work, site = built
    assert (site / "fuzz" / "evdiff_fuzzer.py").exists() and (site / "impls" / "reference" / "model.py").exists()
    for target in __import__("impls.api", fromlist=["x"]).IMPLEMENTATIONS.values():
        module = target.split(":")[0]
        assert (site / module.replace(".", "/")).with_suffix(".py").exists() or \
            (site / module.replace(".", "/") / "__init__.py").exists(), f"{module} is not installed"
    args = (work / "pyinstaller-args").read_text().split()
    assert args == ["--collect-submodules", "impls", "--collect-submodules", "fuzz",
                    "--add-data", "corpus/known-divergences.txt:corpus"]


def test_build_ships_seeds_dictionary_and_options(built):
    tmp, out, work, site = built
    with zipfile.ZipFile(out / "evdiff_fuzzer_seed_corpus.zip") as z:
        names = sorted(z.namelist())
        assert len(names) == len(seeds.seed_files()) > 0
        first = seeds.seed_files()[0]
        assert binary.decode(z.read(f"{seeds.seed_name(first)}.bin")) == read_scenario(first)
        assert any(n.startswith("kvm-tests--") for n in names)
    assert (out / "evdiff_fuzzer.dict").read_text() == seeds.dictionary(seeds.SEEDS)
    assert f"max_len = {1 + binary.RECORD * binary.MAX_EVENTS}" in (out / "evdiff_fuzzer.options").read_text()


def test_built_target_runs_like_a_worker_starts_it(built, tmp_path):
    """A worker unpacks the seed corpus and runs the target on it, from
    another directory, with only the installed project."""
    _, out, _, _ = built
    corpus = tmp_path / "corpus"
    with zipfile.ZipFile(out / "evdiff_fuzzer_seed_corpus.zip") as z:
        z.extractall(corpus)
    agree = [p for p in sorted(corpus.iterdir()) if not p.name.startswith("bug-")][:5]
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVDIFF_") and k != "PYTHONPATH"}
    env["EVDIFF_IMPLS"] = "reference"
    r = subprocess.run([str(out / "evdiff_fuzzer"), f"-dict={out / 'evdiff_fuzzer.dict'}", *map(str, agree)],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "Executed" in r.stderr and "raise at the first divergence" in r.stderr
    r = subprocess.run([str(out / "evdiff_fuzzer"), "-runs=300", f"-dict={out / 'evdiff_fuzzer.dict'}",
                        "-max_len=769", str(corpus)], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]


@pytest.mark.parametrize("workflow, modes", [
    ("cflite_pr.yml", ["code-change"]), ("cflite_batch.yml", ["batch"]), ("cflite_cron.yml", ["prune", "coverage"])])
def test_github_workflows_build_the_python_target_and_run_each_mode(workflow, modes):
    """The ClusterFuzzLite workflows (no YAML parser is installed: the lines
    that matter are checked as text)."""
    lines = [line.strip() for line in (ROOT / ".github" / "workflows" / workflow).read_text().splitlines()]
    builds = [i for i, line in enumerate(lines) if line == "uses: google/clusterfuzzlite/actions/build_fuzzers@v1"]
    runs = [i for i, line in enumerate(lines) if line == "uses: google/clusterfuzzlite/actions/run_fuzzers@v1"]
    assert len(builds) == len(runs) == len(modes)
    assert sum(line == "language: python" for line in lines) == len(modes)
    assert [line for line in lines if line.startswith("mode:")] == [f"mode: '{m}'" for m in modes]
    assert "\t" not in "".join(lines)
