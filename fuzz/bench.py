"""`evdiff bench`: how fast the differential loop runs (filled in below)."""
from __future__ import annotations


def add_arguments(p) -> None:
    p.add_argument("--seconds", type=float, default=3.0, help="seconds per measurement (default: 3)")


def main(args) -> int:
    print("evdiff bench: not yet")
    return 0
