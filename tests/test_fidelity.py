"""Every function a registered kernel port runs names the tree it follows.

A port (every registered implementation but the reference) declares on its
class `kernel_tree`, the tree its own functions name in `@origin`, and
`takes_over`: the other trees whose functions it runs, each with `None`
(all of them: the port is a patch series over that tree) or the names of
the functions that tree has unchanged in the port's own (each with where
that was checked).  The test lists the functions of the port's vCPU class
(inherited ones included), of its driver class, and the module-level
functions of its package, and fails on one that

* carries neither an `@origin` nor a `@glue` declaration,
* names a tree the port does not declare, or
* comes from a declared tree without being declared taken over.

Dunder methods are Python's object protocol, not ports of anything: they
are the one thing not listed.
"""
from __future__ import annotations

import pytest

from impls import api
from impls.origin import class_functions, module_functions


def _ports() -> dict[str, type]:
    out = {}
    for name in api.names():
        cls = type(api.load(name))
        if "kernel_tree" in dir(cls):
            out[name] = cls
    return out


PORTS = _ports()


def _package(cls: type) -> str:
    return cls.__module__


def _port_packages() -> set[str]:
    return {_package(cls) for cls in PORTS.values()}


def _functions(klass: type):
    return class_functions(klass)


def _module_functions(cls: type):
    return module_functions(_package(cls), _port_packages())


def _glue(fn, owner: type | None) -> str | None:
    return getattr(fn, "__glue__", None) or (owner is not None and vars(owner).get("__glue__")) or None


def _check(cls: type, name: str, fn, owner: type | None) -> str | None:
    """None if `fn` is fine for port `cls`, else what is wrong."""
    if _glue(fn, owner):
        return None
    o = getattr(fn, "__origin__", None)
    if o is None:
        return "neither @origin nor @glue"
    if o.tree.startswith(cls.kernel_tree):
        return None
    for tree, names in cls.takes_over.items():
        if o.tree.startswith(tree):
            if names is None or name in names:
                return None
            return f"from {o.tree!r} ({o.file} {o.function}) but not declared taken over"
    return f"names tree {o.tree!r}, not {cls.kernel_tree!r} nor one it takes over"


def test_every_registered_implementation_but_the_reference_is_a_port():
    assert set(api.names()) - set(PORTS) == {"reference"}


@pytest.mark.parametrize("name", sorted(PORTS))
def test_port_declares_its_own_tree(name):
    """Declared on the port's own class, so a port subclassing another
    cannot inherit the other's tree by omission."""
    cls = PORTS[name]
    assert "kernel_tree" in vars(cls) and "takes_over" in vars(cls)
    assert cls.kernel_tree and cls.kernel_tree not in cls.takes_over


@pytest.mark.parametrize("name", sorted(PORTS))
def test_vcpu_functions_name_the_port_tree(name):
    cls = PORTS[name]
    bad = [f"{owner.__module__}.{owner.__name__}.{fn_name}: {why}"
           for fn_name, fn, owner in _functions(cls.vcpu_class)
           if (why := _check(cls, fn_name, fn, owner))]
    assert not bad, f"{name}: " + "\n".join(bad)


@pytest.mark.parametrize("name", sorted(PORTS))
def test_driver_functions_are_declared(name):
    cls = PORTS[name]
    bad = [f"{owner.__module__}.{owner.__name__}.{fn_name}: {why}"
           for fn_name, fn, owner in _functions(cls.driver_class)
           if (why := _check(cls, fn_name, fn, owner))]
    assert not bad, f"{name}: " + "\n".join(bad)


@pytest.mark.parametrize("name", sorted(PORTS))
def test_module_functions_name_the_port_tree(name):
    cls = PORTS[name]
    bad = [f"{qual}: {why}" for qual, fn_name, fn in _module_functions(cls)
           if (why := _check(cls, fn_name, fn, None))]
    assert not bad, f"{name}: " + "\n".join(bad)


@pytest.mark.parametrize("name", sorted(PORTS))
def test_declarations_are_not_stale(name):
    """A function declared taken over from a tree is run by the port and
    still comes from that tree (not overridden since)."""
    cls = PORTS[name]
    seen = {fn_name: fn for fn_name, fn, _ in _functions(cls.vcpu_class)}
    seen.update({fn_name: fn for _, fn_name, fn in _module_functions(cls)})
    for tree, names in cls.takes_over.items():
        for fn_name in names or ():
            assert fn_name in seen, f"{name}: {fn_name} is declared taken over from {tree} but not run"
            o = getattr(seen[fn_name], "__origin__", None)
            assert o is not None and o.tree.startswith(tree), (name, fn_name, o)


@pytest.mark.parametrize("name", [n for n in sorted(PORTS) if PORTS[n].takes_over])
def test_takes_over_names_where_each_was_checked(name):
    """A function taken over one by one says where the port's own tree was
    read to find it unchanged."""
    for tree, names in PORTS[name].takes_over.items():
        if names is not None:
            assert all(isinstance(v, str) and v for v in names.values()), (name, tree)


def test_glue_says_what_it_is_instead():
    for name, cls in PORTS.items():
        for klass in (cls.vcpu_class, cls.driver_class):
            for fn_name, fn, owner in _functions(klass):
                why = _glue(fn, owner)
                if why is not None:
                    assert isinstance(why, str) and len(why) > 10, (name, fn_name)


def test_the_check_catches_what_it_should():
    """The rule itself, on made-up functions: a function without origin, one
    from an undeclared tree, one from a declared tree not taken over."""
    from impls.origin import glue, origin

    class Port:
        kernel_tree = "6.1"
        takes_over = {"5.11": {"kept": "read somewhere"}}

    @origin("x.c", "f", tree="6.1")
    def own(): ...

    @origin("x.c", "kept", tree="5.11-rc7")
    def kept(): ...

    @origin("x.c", "g", tree="5.11-rc7")
    def inherited(): ...

    @origin("x.c", "h", tree="RFC 2021-02-25 v1")
    def alien(): ...

    @glue("an accessor of the simulated CPU")
    def accessor(): ...

    def bare(): ...

    assert _check(Port, "own", own, None) is None
    assert _check(Port, "kept", kept, None) is None
    assert _check(Port, "accessor", accessor, None) is None
    assert "not declared taken over" in _check(Port, "inherited", inherited, None)
    assert "names tree" in _check(Port, "alien", alien, None)
    assert "neither" in _check(Port, "bare", bare, None)
