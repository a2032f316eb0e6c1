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
`impls.prepatch.Prepatch.kernel_tree`); `port_functions` lists them (for
that test and for `evdiff coverage`).
"""
from __future__ import annotations

import importlib
import inspect
import pkgutil
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


# ------------------------------------------------ what a port runs --


def class_functions(klass: type):
    """(name, function, the class in whose body it is defined) for every
    function a class resolves, inherited ones included.  Dunder methods are
    Python's object protocol, not ports of anything: they are left out."""
    for name in dir(klass):
        if name.startswith("__") and name.endswith("__"):
            continue
        raw = inspect.getattr_static(klass, name)
        fn = raw.__func__ if isinstance(raw, (staticmethod, classmethod)) else raw
        if not inspect.isfunction(fn):
            continue
        owner = next(k for k in klass.__mro__ if name in vars(k))
        yield name, fn, owner


def module_functions(package: str, ports: set[str]):
    """(qualified name, name, function) of the module-level functions that
    `package` (a port's package) defines or imports from another port's
    package in `ports` (a kernel helper it runs); sub-packages that are ports
    of their own (in `ports`) are theirs."""
    pkg = importlib.import_module(package)
    own = {pkg.__name__}
    if hasattr(pkg, "__path__"):
        others = ports - {pkg.__name__}
        for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
            if not any(info.name == o or info.name.startswith(o + ".") for o in others):
                own.add(info.name)
    for modname in sorted(own):
        mod = importlib.import_module(modname)
        for name, obj in vars(mod).items():
            if name.startswith("__") or not inspect.isfunction(obj):
                continue
            home = obj.__module__
            if home in own or any(home == p or home.startswith(p + ".") for p in ports):
                yield f"{modname}.{name}", name, obj


def port_functions(cls: type, ports: set[str]) -> list:
    """Every function port `cls` (an implementation class with `vcpu_class`
    and `driver_class`) runs, once each: (name, function, owner class or
    None for a module-level one).  `ports`: the packages of every registered
    port (`cls.__module__` of each)."""
    out, seen = [], set()
    for klass in (cls.vcpu_class, cls.driver_class):
        for name, fn, owner in class_functions(klass):
            if fn.__code__ not in seen:
                seen.add(fn.__code__)
                out.append((name, fn, owner))
    for _, name, fn in module_functions(cls.__module__, ports):
        if fn.__code__ not in seen:
            seen.add(fn.__code__)
            out.append((name, fn, None))
    return out
