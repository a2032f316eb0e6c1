"""Marks a port function with the kernel function it ports.

    @origin("arch/x86/kvm/x86.c", "kvm_multiple_exception", tree="5.11-rc7")
    def kvm_multiple_exception(vcpu, nr, has_error, error_code, ...): ...

`PORTED[tree]` lists what each tree's port covers; a test checks that every
public function of a port module carries an origin.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass


@dataclass(frozen=True)
class Origin:
    file: str
    function: str
    tree: str


PORTED: dict[str, list[Origin]] = defaultdict(list)


def origin(file: str, function: str, *, tree: str):
    def mark(fn):
        fn.__origin__ = Origin(file, function, tree)
        PORTED[tree].append(fn.__origin__)
        return fn

    return mark
