"""Marks a port function with the kernel function it ports, or as glue.

    @origin("arch/x86/kvm/x86.c", "kvm_multiple_exception", tree="5.11-rc7")
    def kvm_multiple_exception(vcpu, nr, has_error, error_code, ...): ...

`tree` names the kernel tree (or posted series) the function follows; `read`,
where given, names the copy it was read from (repository and commit, or a
mailing-list message).  `PORTED[tree]` lists what each tree's port covers.

    @glue("the simulated CPU's loaded VMCS")
    def vmcs(vcpu): ...

marks a function (or every function a class defines) as simulation glue: no
kernel function, so no origin.  tests/test_fidelity.py checks every function
a registered port runs against the port's declared tree (see
`impls.prepatch.Prepatch.kernel_tree`).
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass


@dataclass(frozen=True)
class Origin:
    file: str
    function: str
    tree: str
    read: str = ""


PORTED: dict[str, list[Origin]] = defaultdict(list)


def origin(file: str, function: str, *, tree: str, read: str = ""):
    def mark(fn):
        fn.__origin__ = Origin(file, function, tree, read)
        PORTED[tree].append(fn.__origin__)
        return fn

    return mark


def glue(why: str):
    """Declare a function, or every function of a class, as no kernel code
    (an accessor of the simulated CPU, the alarm recorder, the scenario
    driver); `why` says what it is instead."""

    def mark(obj):
        obj.__glue__ = why
        return obj

    return mark
