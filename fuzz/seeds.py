"""The fuzzer's start: the text seeds in binary form, and a libFuzzer dictionary.

Both are generated from their sources of truth (`corpus/seeds/*.txt` and
`SPECS`), so that a new event kind or a changed encoding never leaves a stale
binary behind: `evdiff fuzz` writes them at campaign start, and
`.clusterfuzzlite/build.sh` at build time.  `fuzz/evdiff_fuzzer.dict` is the
dictionary as shipped (a test keeps it equal to `dictionary()`).

    python -m fuzz.seeds --binary OUTDIR [--seeds DIR]   write OUTDIR/<seed>.bin
    python -m fuzz.seeds --dict FILE [--seeds DIR]       write the dictionary
                                                         (with the seeds' records)
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fuzz import binary, corpus_path
from fuzz.scenario import SPECS, Event, PType, normalise
from impls.arch import Ev, EvType
from fuzz.text import read_scenario

ROOT = Path(__file__).resolve().parent.parent
SEEDS = corpus_path("seeds")
DICTIONARY = Path(__file__).resolve().parent / "evdiff_fuzzer.dict"


def seed_files(seeds: Path = SEEDS) -> list[Path]:
    """Every text seed below `seeds`, its subdirectories included
    (`corpus/seeds/kvm-tests/`: KVM's own tests, restated)."""
    return sorted(seeds.rglob("*.txt")) if seeds.is_dir() else []


def seed_name(path: Path, seeds: Path = SEEDS) -> str:
    """A seed's name, unique in the directory tree: its path below `seeds`
    without `.txt`, '/' written '--' (`kvm-tests--eventinj-de-vmx`)."""
    return "--".join(path.relative_to(seeds).with_suffix("").parts)


def binary_seeds(seeds: Path = SEEDS) -> dict[str, bytes]:
    """{seed name: canonical bytes} of every text seed."""
    out = {}
    for path in seed_files(seeds):
        scenario = read_scenario(path)
        data = binary.encode(scenario)
        if binary.decode(data) != scenario:  # pragma: no cover -- the binary form holds every seed
            raise ValueError(f"{path}: the binary form cannot hold this scenario")
        out[seed_name(path, seeds)] = data
    return out


def write_binary_seeds(outdir: Path, seeds: Path = SEEDS) -> int:
    """Write `<seed name>.bin` for every seed whose file is missing or different."""
    outdir.mkdir(parents=True, exist_ok=True)
    from fuzz.findings import write_atomic

    n = 0
    for stem, data in binary_seeds(seeds).items():
        path = outdir / f"{stem}.bin"
        if not path.exists() or path.read_bytes() != data:
            write_atomic(path, data)
        n += 1
    return n


def _record(ev: Event) -> bytes:
    return binary.encode_record(ev)


def _escape(data: bytes) -> str:
    return "".join(chr(b) if 0x20 <= b < 0x7f and chr(b) not in '"\\' else f"\\x{b:02x}" for b in data)


#: Values worth a dictionary entry of their own, by parameter type: the
#: vectors and events the bug classes live on (#PF, #GP, #DF, #SS, #DB, NMI,
#: an external interrupt), every ENUM choice, true for a BOOL.
def _variants(param) -> list:
    t = param.type
    if t is PType.ENUM:
        return list(param.choices)
    if t is PType.BOOL:
        return [True]
    if t in (PType.EXC, PType.OPT_EXC):
        return [v for v in (1, 8, 12, 13, 14) if v in getattr(param, "domain", (v,))]
    if t is PType.VECTOR:
        return [2, 8, 13, 14, 0x20]
    if t is PType.VECSET:
        return [1 << 14, 1 << 13, 1 << 8, (1 << 14) | (1 << 13) | (1 << 8) | (1 << 12) | (1 << 1)]
    if t is PType.EVENT:
        # ... and the injections VM entry must refuse (SDM 26.2.1.3, APM
        # 15.20): type 7, type 3 with NMI's vector, a 32-bit error code,
        # an error code the vector does not push, a reserved type.
        return [Ev(EvType.NMI, 2), Ev(EvType.EXT_INTR, 0x20), Ev(EvType.SOFT_INT, 0x80),
                Ev(EvType.HW_EXCEPTION, 14, 2), Ev(EvType.HW_EXCEPTION, 13, 0), Ev(EvType.HW_EXCEPTION, 1),
                Ev(EvType.OTHER_EVENT, 0), Ev(EvType.HW_EXCEPTION, 2), Ev(EvType.HW_EXCEPTION, 13, 0xDEADBEEF),
                Ev(EvType.HW_EXCEPTION, 6, 0), Ev(EvType.RESERVED, 0x20)]
    return []


#: Events whose arguments matter together, worth entries of their own: L1
#: injecting a software event with the length of its instruction (INT n's
#: 2 bytes; INT3's 1, which SVM pushes as next_rip).
_COMBINED = {
    "l1_vmentry_soft_int": Event("l1.vmentry", (Ev(EvType.SOFT_INT, 0x80), 2)),
    "l1_vmentry_int3": Event("l1.vmentry", (Ev(EvType.HW_EXCEPTION, 3), 1)),
}


def _language_entries():
    """(name, record): each event kind with its default arguments, then with
    one argument set to each value of `_variants`, then `_COMBINED`."""
    for spec in SPECS:
        defaults = tuple(p.default for p in spec.params)
        base = spec.kind.replace(".", "_")
        yield f"kind_{base}", _record(normalise(Event(spec.kind, defaults)))
        for i, p in enumerate(spec.params):
            for j, v in enumerate(_variants(p)):
                yield f"{base}_{p.name}_{j}", _record(normalise(Event(spec.kind, defaults[:i] + (v,) + defaults[i + 1:])))
    for name, ev in _COMBINED.items():
        yield name, _record(normalise(ev))


def language_records() -> list[bytes]:
    """The dictionary's records that come from the language, not from the
    seeds (`_language_entries`), each once."""
    return list(dict.fromkeys(rec for _, rec in _language_entries()))


def dictionary(seeds: Path | None = None) -> str:
    """libFuzzer dictionary: whole records (so an insertion at a record
    boundary adds one event): the language's (`_language_entries`), then,
    given `seeds`, every distinct record of those seeds."""
    lines = [f"# libFuzzer dictionary for fuzz/evdiff_fuzzer.py: one entry a {binary.RECORD}-byte event record.",
             "# Generated by `python -m fuzz.seeds --dict`; do not edit."]
    seen = set()
    for name, rec in _language_entries():
        if rec not in seen:
            seen.add(rec)
            lines.append(f'{name}="{_escape(rec)}"')
    n = 0
    for stem, data in (binary_seeds(seeds) if seeds else {}).items():
        body = data[1:]
        for off in range(0, len(body), binary.RECORD):
            rec = body[off:off + binary.RECORD]
            if rec not in seen:
                seen.add(rec)
                n += 1
                lines.append(f'seed_{n}="{_escape(rec)}"')
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m fuzz.seeds", description=__doc__.split("\n\n")[0])
    ap.add_argument("--binary", metavar="OUTDIR", help="write the seeds in binary form here")
    ap.add_argument("--dict", metavar="FILE", help="write the libFuzzer dictionary here")
    ap.add_argument("--seeds", help="text seeds (default: corpus/seeds for --binary, none for --dict)")
    args = ap.parse_args(argv)
    if not (args.binary or args.dict):
        ap.error("give --binary OUTDIR and/or --dict FILE")
    if args.binary:
        n = write_binary_seeds(Path(args.binary), Path(args.seeds) if args.seeds else SEEDS)
        print(f"{n} seeds -> {args.binary}")
    if args.dict:
        Path(args.dict).write_text(dictionary(Path(args.seeds) if args.seeds else None))
        print(f"dictionary -> {args.dict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
