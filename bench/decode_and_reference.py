#!/usr/bin/env python3
"""Scenarios per second: binary decode alone, and decode + the reference.

Not a test: prints numbers.  Inputs are random byte strings of 16 and 64
events (fixed seed), so runs are comparable.  Decoding is measured cold
(the decoder's record cache cleared before each pass), as `evdiff bench`
does.  Usage:
    python bench/decode_and_reference.py [--seconds 3]
"""
import argparse
import random
import time

from fuzz import binary
from fuzz.binary import RECORD, decode
from impls.api import load


def rate(fn, inputs, seconds):
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        binary._RECORDS.clear()
        for data in inputs:
            fn(data)
        n += len(inputs)
    return n / (time.perf_counter() - start)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=3.0)
    args = ap.parse_args()
    ref = load("reference")
    rng = random.Random(1)
    print(f"{'events':>6} {'decode/s':>10} {'decode+reference/s':>19} {'ratio':>6}")
    for events in (16, 64):
        inputs = [bytes(rng.randrange(256) for _ in range(1 + RECORD * events)) for _ in range(200)]
        d = rate(decode, inputs, args.seconds)
        r = rate(lambda b: ref.run(decode(b)), inputs, args.seconds)
        print(f"{events:>6} {d:>10.0f} {r:>19.0f} {r / d:>6.2f}")


if __name__ == "__main__":
    main()
