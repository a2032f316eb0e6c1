#!/bin/bash -eu
# Build evdiff's fuzz target for ClusterFuzzLite / OSS-Fuzz (base-builder-python).
#
# Inputs: $SRC/evdiff (the repository), $OUT (what the fuzzing workers get),
# $WORK (scratch).  Outputs in $OUT:
#   evdiff_fuzzer                 the frozen atheris target (PyInstaller, via
#                                 compile_python_fuzzer) and its wrapper
#   evdiff_fuzzer.dict            libFuzzer dictionary (one event record a line)
#   evdiff_fuzzer.options         max_len: longer inputs are ignored by decoding
#   evdiff_fuzzer_seed_corpus.zip corpus/seeds in binary form
#
# Without EVDIFF_FINDINGS the target raises each divergence that is not in
# corpus/known-divergences.txt from frames named after its signature, so
# ClusterFuzz's crash buckets follow signatures.
set -eu
cd "$SRC/evdiff"

# The project and its dependencies, as a user installs it.
pip3 install .

# Seeds and dictionary, generated from their sources of truth.
python3 -m fuzz.seeds --seeds corpus/seeds --binary "$WORK/evdiff_seeds" --dict "$OUT/evdiff_fuzzer.dict"
python3 - "$WORK/evdiff_seeds" "$OUT/evdiff_fuzzer_seed_corpus.zip" <<'PY'
import pathlib, sys, zipfile
src, dst = pathlib.Path(sys.argv[1]), sys.argv[2]
with zipfile.ZipFile(dst, "w") as z:
    for p in sorted(src.glob("*.bin")):
        z.write(p, p.name)
PY
max_len=$(python3 -c 'from fuzz.binary import RECORD, MAX_EVENTS; print(1 + RECORD * MAX_EVENTS)')
printf '[libfuzzer]\nmax_len = %s\n' "$max_len" > "$OUT/evdiff_fuzzer.options"

# Implementations are loaded by name at run time (impls.api), which PyInstaller
# cannot see: collect every module of both packages.  The known-divergence list
# goes inside the frozen target (fuzz.known reads it from there), so a worker
# does not stop at divergences the project has already explained.
compile_python_fuzzer fuzz/evdiff_fuzzer.py --collect-submodules impls --collect-submodules fuzz \
    --add-data corpus/known-divergences.txt:corpus
