"""The worked example of docs/porting-a-patch.md: nSVM fixes v7 patches 10
and 17 over the 6.18 port (`impls.exp_nsvm_v7`).

* the example ports pass the fidelity rules every registered port passes
  (tests/test_fidelity.py), though they are registered here only;
* with shadow stacks in the guest's CPUID nothing the scenario language
  can inject fails patch 17's check, so the port agrees with `current`;
* without them, `inject=#CP` fails with VMEXIT_INVALID (patch 17) and GIF
  is 0 afterwards (patch 10): a regression against `current` blamed on
  nested_svm_check_event_inj;
* the note's code listings are the files.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

import test_fidelity as fidelity

from fuzz.oracle import compare
from fuzz.text import parse_scenario
from impls import api
from impls.api import Delivered, EntryFailed
from impls.arch import Ev, EvType

ROOT = Path(__file__).resolve().parent.parent
NOTE = ROOT / "docs" / "porting-a-patch.md"

PORTS = {"exp-nsvm-v7": "impls.exp_nsvm_v7:NsvmV7", "exp-nsvm-v7-noshstk": "impls.exp_nsvm_v7:NsvmV7NoShstk"}

INJECT_CP = "evdiff 1 vendor=svm npt=on\nl1.vmentry inject=#CP(0x1)\nirq 0x21\n"


@pytest.fixture
def registered(monkeypatch):
    """The two example ports and their pairs with `current`, as the note
    tells a reviewer to register a port."""
    for name, target in PORTS.items():
        monkeypatch.setitem(api.IMPLEMENTATIONS, name, target)
        api._loaded.pop(name, None)
    monkeypatch.setattr(api, "PAIRS", api.PAIRS + tuple(("current", name) for name in PORTS))
    yield
    for name in PORTS:
        api._loaded.pop(name, None)


@pytest.mark.parametrize("name", sorted(PORTS))
def test_example_port_names_its_trees(registered, name):
    cls = type(api.load(name))
    assert "kernel_tree" in vars(cls) and "takes_over" in vars(cls)
    bad = [f"{owner.__name__}.{fn_name}: {why}"
           for klass in (cls.vcpu_class, cls.driver_class)
           for fn_name, fn, owner in fidelity._functions(klass)
           if (why := fidelity._check(cls, fn_name, fn, owner))]
    bad += [f"{qual}: {why}" for qual, fn_name, fn in fidelity._module_functions(cls)
            if (why := fidelity._check(cls, fn_name, fn, None))]
    assert not bad, "\n".join(bad)
    own = {fn.__origin__.function for _, fn, owner in fidelity._functions(cls.vcpu_class)
           if owner.__module__.startswith("impls.exp_nsvm_v7")}
    assert own == {"nested_svm_event_inj_valid_exept", "nested_svm_check_event_inj",
                   "nested_vmcb_check_controls", "nested_svm_vmrun"}


def test_with_shadow_stacks_the_series_changes_nothing_here(registered):
    """Every vector the language injects is an exception to patch 17 when
    the guest has shadow stacks (#CP included), so no VMRUN fails it."""
    report = compare(parse_scenario(INJECT_CP), ["reference", "current", "exp-nsvm-v7"])
    assert report.agree
    assert report.results["exp-nsvm-v7"] == report.results["current"]
    assert report.results["exp-nsvm-v7"].l2 == ((0, Delivered(2, Ev(EvType.HW_EXCEPTION, 21, 1))),)


def test_without_shadow_stacks_cp_injection_is_a_regression(registered):
    report = compare(parse_scenario(INJECT_CP), ["reference", "current", "exp-nsvm-v7-noshstk"])
    out = report.results["exp-nsvm-v7-noshstk"]
    assert out.l1 == ((0, EntryFailed("VMEXIT_INVALID")),) and out.l2 == ()
    [cause] = report.causes
    assert cause.function == "nested_svm_check_event_inj"
    assert cause.signature == "svm nested_svm_check_event_inj: vector N is not an exception for this guest"
    assert cause.verdicts == {"current->exp-nsvm-v7-noshstk": "regression"}


def test_failed_vmrun_leaves_gif_clear(registered):
    """Patch 10: after the #VMEXIT(INVALID) the interrupt waits for STGI
    (6.18 left GIF set and delivered it at once)."""
    port = api.load("exp-nsvm-v7-noshstk")
    held = port.run(parse_scenario(INJECT_CP))
    assert held.final.level == 1 and held.final.irq_pending == (0x21,)
    taken = port.run(parse_scenario(INJECT_CP + "stgi\n"))
    assert taken.l1[1:] == ((3, Delivered(1, Ev(EvType.EXT_INTR, 0x21))),)

    from impls.upstream.svm_nested import SvmNested61

    class Only17(type(port).vcpu_class):
        nested_svm_vmrun = SvmNested61.nested_svm_vmrun

    before = type(port)()
    before.vcpu_class = Only17
    assert before.run(parse_scenario(INJECT_CP)).l1[1:] == ((2, Delivered(1, Ev(EvType.EXT_INTR, 0x21))),)


def test_the_note_lists_the_files_as_they_are():
    """Each listing headed by a path in the note is that file, verbatim."""
    text = NOTE.read_text()
    listings = re.findall(r"^`(impls/exp_nsvm_v7/[\w/]+\.py)`:\n\n```python\n(.*?)```$", text, re.M | re.S)
    assert {path for path, _ in listings} == {"impls/exp_nsvm_v7/__init__.py", "impls/exp_nsvm_v7/vcpu.py",
                                              "impls/exp_nsvm_v7/svm_nested.py"}
    for path, body in listings:
        assert body == (ROOT / path).read_text(), path
