"""The upstream port (KVM as of Linux 6.1) on the simulated CPU.

* every function the port defines names its 6.1 origin, and the vCPU
  resolves each function 6.1 changed to the 6.1 version;
* on the seed's bug classes it agrees with the reference for both vendors,
  except where pinned below with the 6.1 code that causes the difference;
  the oracle's prepatch->upstream verdict is pinned per seed;
* on plain (non-nested) cases it agrees with the reference, and with the
  5.11 port wherever 6.1 did not change the non-nested path;
* the 6.1 mechanisms (exception_vmexit, the nested triple fault,
  KVM_CAP_X86_TRIPLE_FAULT_EVENT, the KVM_RUN morph) do what 6.1 does.
"""
from __future__ import annotations

import inspect
from pathlib import Path

import pytest

import agreement

from fuzz.oracle import compare
from fuzz.text import parse_scenario, read_scenario
from impls import api
from impls.api import Outcome
from impls.arch.events import Ev, EvType, exception

SEEDS = Path(__file__).resolve().parent.parent / "corpus" / "seeds"


def upstream(s):
    return api.load("upstream").run(s)


def agrees(s) -> bool:
    return agreement.agrees("upstream", s)


def verdicts(s) -> dict[str, str]:
    """field -> the oracle's prepatch->upstream verdict, for every field where
    prepatch or upstream differs from the reference."""
    report = compare(s, ["reference", "prepatch", "upstream"])
    return {d.field: d.verdicts["prepatch->upstream"] for d in report.divergences
            if "prepatch->upstream" in d.verdicts}


def scenario(vendor: str, npt: str, body: str, caps: str = ""):
    paging = "ept" if vendor == "vmx" else "npt"
    return parse_scenario(f"evdiff 1 vendor={vendor} {paging}={npt}{' caps=' + caps if caps else ''}\n{body}")


def seed_as(name: str, vendor: str, npt: str):
    text = (SEEDS / f"{name}.txt").read_text()
    body = "\n".join(line for line in text.splitlines() if not line.startswith(("evdiff", ";")))
    header = next(line for line in text.splitlines() if line.startswith("evdiff"))
    caps = [w for w in header.split() if w.startswith("caps=")]
    paging = "ept" if vendor == "vmx" else "npt"
    return parse_scenario(f"evdiff 1 vendor={vendor} {paging}={npt} {' '.join(caps)}\n{body}\n")


def vcpu_after(s):
    """The upstream vCPU after running `s` (for looking at KVM's state)."""
    from impls.upstream.driver import Driver
    from impls.upstream.vcpu import Vcpu

    d = Driver(s, Vcpu)
    d.run_events()
    return d


# ---------------------------------------------------------------- origins --

def test_registered():
    assert "upstream" in api.names()
    impl = api.load("upstream")
    assert impl.name == "upstream" and "6.1" in impl.origin
    assert ("prepatch", "upstream") in api.PAIRS


def test_every_port_function_names_its_61_origin_and_where_it_was_read():
    """Every function the 6.1 modules define is a 6.1 port (or declared
    glue) and says which copy of 6.1 it was read from (issue 13); the
    inherited 5.11 ones are checked by tests/test_fidelity.py against
    impls.upstream.reused."""
    from impls.upstream import svm, svm_nested, vcpu, vmx, vmx_nested, x86

    missing, wrong_tree, unread = [], [], []
    for mod in (x86, vmx, vmx_nested, svm, svm_nested, vcpu):
        for name, obj in vars(mod).items():
            fns = []
            if inspect.isclass(obj) and obj.__module__ == mod.__name__:
                fns = [(f"{name}.{m}", f) for m, f in vars(obj).items()
                       if inspect.isfunction(f) and not m.startswith("__") and not hasattr(f, "__glue__")]
            elif inspect.isfunction(obj) and obj.__module__ == mod.__name__ and not hasattr(obj, "__glue__"):
                fns = [(name, obj)]
            for qual, fn in fns:
                o = getattr(fn, "__origin__", None)
                if o is None:
                    missing.append(f"{mod.__name__}.{qual}")
                elif o.tree != "6.1":
                    wrong_tree.append(f"{mod.__name__}.{qual}: {o.tree}")
                elif not o.read:
                    unread.append(f"{mod.__name__}.{qual}")
    assert not missing, f"port functions without @origin: {missing}"
    assert not wrong_tree, f"port functions not marked tree='6.1': {wrong_tree}"
    assert not unread, f"6.1 functions that do not say where they were read: {unread}"


#: Every kernel function whose 6.1 version differs from 5.11 in what the
#: event paths do; the vCPU must resolve each to a 6.1 port.
CHANGED_IN_61 = [
    "exception_type", "kvm_deliver_exception_payload", "kvm_queue_exception_vmexit", "kvm_multiple_exception",
    "kvm_is_exception_pending", "kvm_clear_exception_queue", "kvm_inject_page_fault",
    "kvm_inject_emulated_page_fault", "kvm_inject_exception", "kvm_check_nested_events",
    "kvm_check_and_inject_events", "vcpu_enter_guest", "kvm_vcpu_running", "kvm_arch_vcpu_ioctl_run",
    "inject_emulated_exception", "x86_emulate_instruction",
    "kvm_vcpu_ioctl_x86_get_vcpu_events", "kvm_vcpu_ioctl_x86_set_vcpu_events",
    "vmx_inject_exception", "vmx_inject_irq",
    "nested_vmx_is_exception_vmexit", "nested_vmx_inject_exception_vmexit", "nested_vmx_triple_fault",
    "vmx_check_nested_events", "vmcs12_save_pending_event", "prepare_vmcs12", "nested_vmx_vmexit",
    "prepare_vmcs02", "vmx_has_nested_events",
    "svm_inject_exception", "svm_inject_irq", "svm_inject_nmi", "svm_nmi_allowed", "svm_interrupt_allowed",
    "svm_complete_interrupts",
    "nested_svm_is_exception_vmexit", "nested_svm_inject_exception_vmexit", "nested_svm_triple_fault",
    "svm_check_nested_events", "nested_svm_vmexit", "nested_svm_vmrun", "enter_svm_guest_mode",
]


@pytest.mark.parametrize("fn", CHANGED_IN_61)
def test_vcpu_resolves_changed_functions_to_61(fn):
    from impls.upstream.vcpu import Vcpu

    assert getattr(Vcpu, fn).__origin__.tree == "6.1"


@pytest.mark.parametrize("vendor", ["vmx", "svm"])
def test_ops_tables_are_the_61_hooks(vendor):
    v = vcpu_after(scenario(vendor, "on", "")).vcpu
    assert v.kvm_x86_ops.inject_exception.__origin__.tree == "6.1"
    assert not hasattr(v.kvm_x86_ops, "queue_exception")
    assert v.nested_ops.triple_fault.__origin__.function.endswith("_triple_fault")
    assert v.nested_ops.is_exception_vmexit.__origin__.function.endswith("is_exception_vmexit")


# ----------------------------------------------------- the seed's bug classes --

#: prepatch->upstream verdict per field, per bug seed (every field where
#: either port differs from the reference).
BUG_SEED_VERDICTS = {
    "bug-a-lost-first-exception-svm": {"l1": "fixed"},
    "bug-a-lost-first-exception-vmx": {},
    "bug-b-triple-fault-l2-svm": {"final.level": "fixed", "l1": "fixed", "shutdown": "fixed"},
    # final.cr2: see test_b_vmx_cr2_of_the_fault_that_triple_faults.
    "bug-b-triple-fault-l2-vmx": {"final.cr2": "still-wrong", "final.interrupts_enabled": "fixed",
                                  "final.level": "fixed", "l1": "fixed", "shutdown": "fixed"},
    "bug-c-interrupt-lost-svm": {"final.level": "fixed", "l1": "fixed"},
    "bug-c-interrupt-lost-vmx": {},
    "bug-df-spurious-svm": {"final.level": "fixed", "l1": "fixed", "shutdown": "fixed"},
    "bug-df-spurious-vmx": {},
}


def test_every_bug_seed_is_pinned():
    assert {p.stem for p in SEEDS.glob("bug-*.txt")} == set(BUG_SEED_VERDICTS)


@pytest.mark.parametrize("name", sorted(BUG_SEED_VERDICTS))
def test_bug_seed_verdict(name):
    s = read_scenario(SEEDS / f"{name}.txt")
    assert verdicts(s) == BUG_SEED_VERDICTS[name]


@pytest.mark.parametrize("name", sorted(BUG_SEED_VERDICTS))
def test_bug_seed_agrees_but_for_pinned_causes(name):
    s = read_scenario(SEEDS / f"{name}.txt")
    pinned = {"bug-b-triple-fault-l2-vmx": {"final.cr2"}}.get(name, set())
    report = compare(s, ["reference", "upstream"])
    assert {d.field for d in report.divergences} == pinned


@pytest.mark.parametrize("cls", ["bug-a-lost-first-exception", "bug-b-triple-fault-l2", "bug-c-interrupt-lost",
                                 "bug-df-spurious"])
@pytest.mark.parametrize("vendor", ["vmx", "svm"])
@pytest.mark.parametrize("npt", ["on", "off"])
def test_bug_classes_agree_on_l1_and_l2(cls, vendor, npt):
    """What L1 and L2 see agrees with the reference for every bug class, both
    vendors, with and without nested paging (the seed's header aside)."""
    s = seed_as(f"{cls}-vmx", vendor, npt)
    report = compare(s, ["reference", "upstream"])
    assert not {d.field for d in report.divergences} & {"l1", "l2", "shutdown", "alarms", "livelock"}


def test_a_svm_exitintinfo_from_the_requeued_exception():
    """(A) SVM, NPT off: the #PF during delivery of L1's #GP is queued by
    kvm_inject_page_fault; kvm_multiple_exception morphs it into
    exception_vmexit (L1 intercepts #PF) before any merge, so the re-injected
    #GP stays injected and nested_save_pending_event_to_vmcb12 reports it."""
    s = read_scenario(SEEDS / "bug-a-lost-first-exception-svm.txt")
    (step, exit_), = upstream(s).l1
    assert exit_.reason == "EXCP #PF" and exit_.vectoring.vector == 13


@pytest.mark.parametrize("vendor", ["vmx", "svm"])
def test_b_triple_fault_goes_to_l1(vendor):
    """(B) L1 injects #DF, its delivery hits a #PF L0 sees: on top of the
    re-injected #DF kvm_multiple_exception requests KVM_REQ_TRIPLE_FAULT, and
    in guest mode kvm_check_nested_events hands it to
    nested_ops->triple_fault: a TRIPLE_FAULT exit (VMX, no IDT-vectoring:
    vmcs12_save_pending_event) / SHUTDOWN #VMEXIT (SVM)."""
    out = upstream(read_scenario(SEEDS / f"bug-b-triple-fault-l2-{vendor}.txt"))
    (step, exit_), = out.l1
    assert exit_.reason == ("TRIPLE_FAULT" if vendor == "vmx" else "SHUTDOWN")
    assert out.shutdown is None and out.final.level == 1


def test_b_vmx_cr2_of_the_fault_that_triple_faults():
    """Pinned difference (bug-b VMX): the #PF met while delivering the #DF is
    queued with its address as payload, deferred in guest mode; on top of the
    #DF kvm_multiple_exception requests a triple fault and returns, so the
    payload never reaches CR2.  The reference loads CR2 when the #PF is
    raised (SDM 4.7) and, on VMX, L1 shares that CR2."""
    out = upstream(read_scenario(SEEDS / "bug-b-triple-fault-l2-vmx.txt"))
    assert out.final.cr2 == 0


@pytest.mark.parametrize("vendor", ["vmx", "svm"])
def test_c_interrupt_in_idt_vectoring(vendor):
    """(C) the #PF during delivery of an interrupt to L2 becomes
    exception_vmexit; the exit reports the re-queued interrupt."""
    out = upstream(read_scenario(SEEDS / f"bug-c-interrupt-lost-{vendor}.txt"))
    (step, exit_), = out.l1
    assert exit_.vectoring is not None and exit_.vectoring.vector == 0x20


# ------------------------------------------------- the other seeds, plain cases --

OTHER_SEEDS = sorted(p.stem for p in SEEDS.glob("*.txt") if not p.stem.startswith("bug-"))


@pytest.mark.parametrize("name", OTHER_SEEDS)
def test_no_regression_on_other_seeds(name):
    """Upstream differs from the reference on a seed only where 5.11 does
    too (still-wrong), never alone."""
    v = verdicts(read_scenario(SEEDS / f"{name}.txt"))
    assert not {f: x for f, x in v.items() if x == "regression"}


#: Plain cases: the #DF table, error codes, NMI blocking, the shadow.
PLAIN = [
    "df-benign-then-contributory", "df-benign-then-pagefault", "df-contributory-then-contributory",
    "df-contributory-then-pagefault", "df-doublefault-then-contributory", "df-doublefault-then-pagefault",
    "df-pagefault-then-contributory", "df-pagefault-then-pagefault", "ec-idt-limit",
    "ec-interrupt-gate-not-present", "ec-real-mode", "ec-stack-segment", "interrupt-priority-nmi-first",
    "interrupt-shadow-sti", "nmi-blocked-until-iret", "nmi-held-by-mov-ss", "save-restore-invisible",
]


@pytest.mark.parametrize("vendor", ["vmx", "svm"])
@pytest.mark.parametrize("name", PLAIN)
def test_plain_cases_agree(name, vendor):
    assert agrees(seed_as(name, vendor, "on"))


@pytest.mark.parametrize("vendor", ["vmx", "svm"])
@pytest.mark.parametrize("body", [
    "exception #GP ec=0x18\niret\nexception #GP ec=0x20\n",
    "nmi\nrun\nnmi\nrun\niret\nrun\n",
    "cli\nirq 0x30\nrun\nsti\nrun\n",
    "irq 0x21\nirq 0x40\nrun\n",
    "l0.mmu_fixup\nirq 0x22\nrun\n",
    "nmi\nrun\nnmi\nl0.mmu_fixup iret\niret\nrun\n",
    "l0.emulate #GP ec=0x0\n",
    "user.set_exception #NP ec=0x10 injected=1\nuser.nmi\nrun\n",
])
@pytest.mark.parametrize("npt", ["on", "off"])
def test_small_plain_cases_agree(vendor, body, npt):
    assert agrees(scenario(vendor, npt, body))


@pytest.mark.parametrize("vendor", ["vmx", "svm"])
@pytest.mark.parametrize("name", PLAIN + ["df-benign-then-benign", "df-contributory-then-benign",
                                          "df-doublefault-then-benign", "df-pagefault-then-benign"])
def test_plain_cases_as_511_in_protected_mode(name, vendor):
    """Outside guest mode and real mode 6.1 changed no observable event path:
    upstream and prepatch give the same outcome (whatever the reference says)."""
    s = seed_as(name, vendor, "off")
    if "l1.mode real" in (SEEDS / f"{name}.txt").read_text():
        pytest.skip("real mode: see test_real_mode_error_code_fails_vm_entry")
    a, b = upstream(s), api.load("prepatch").run(s)
    assert all(getattr(a, f) == getattr(b, f) for f in Outcome.FIELDS)


# ------------------------------------------------------ 6.1's own deviations --

def test_real_mode_error_code_fails_vm_entry():
    """6.1 regression: kvm_inject_exception strips the error code outside
    protected mode by clearing error_code, not has_error_code (the slip of
    the RFC's patch 1/4, merged for 5.12; fixed by 6c41468c7c12 "KVM: x86:
    Clear has_error_code, not error_code, for RM exception injection",
    6.3-rc, March 2023, backported to 6.1.24: v6.1 to 6.1.23).
    vmx_inject_exception sets deliver-error-code in real mode, the VM entry
    fails (SDM 26.2.1.3), KVM_EXIT_FAIL_ENTRY.  5.11 dropped has_error at
    queue time and agrees; SVM's EVENTINJ does not check and agrees."""
    s = scenario("vmx", "on", "l1.mode real\nl0.emulate fault=#GP\n")
    assert any(a.startswith("KVM_EXIT_FAIL_ENTRY") for a in upstream(s).alarms)
    assert verdicts(s).get("alarms") == "regression"
    assert agrees(scenario("svm", "on", "l1.mode real\nl0.emulate fault=#GP\n"))


def test_real_mode_error_code_in_l2_is_a_late_vmfail_for_l1():
    """The same in L2 (real mode): vmcs02's entry fails, nested_vmx_reflect_vmexit
    turns vmx->fail into a VMfailValid(7) of L1's VMLAUNCH, long after it
    succeeded."""
    s = scenario("vmx", "on", "l2.mode real\nl1.vmentry\nl0.emulate fault=#GP\n")
    out = upstream(s)
    assert [str(o) for _, o in out.l1] == ["ENTRY FAILED VMfailValid(7)"]
    assert verdicts(s).get("l1") == "regression"


#: Issue 13's two scenarios for the v6.1 tag, the reference's outcome for each.
TRIPLE_FAULT_UNINTERCEPTED = "l1.intercept shutdown=0\nl2.stack #PF\nl1.vmentry inject=#DF(0x0)\n"
NMI_BEFORE_INTR_EXIT = "l1.intercept intr=1\nl1.vmentry inject=int(0x80) insn_len=2\nirq 0x21\nnmi\n"


def test_svm_triple_fault_without_shutdown_intercept_shuts_the_vm_down():
    """v6.1 (92e7d5c83aff, 6.1-rc7): nested_svm_triple_fault returns unless
    vmcb12 intercepts SHUTDOWN, leaving KVM_REQ_TRIPLE_FAULT set, and
    vcpu_enter_guest then exits to userspace with KVM_EXIT_SHUTDOWN: the
    whole VM shuts down (APM 15.14.3), as in the reference and 5.11.  (The
    series' port sent a SHUTDOWN #VMEXIT to L1 regardless.)"""
    s = scenario("svm", "off", TRIPLE_FAULT_UNINTERCEPTED)
    out = upstream(s)
    assert out.l1 == () and out.shutdown == 2
    assert agrees(s) and verdicts(s) == {}
    notes = [n for _, n in out.notes]
    assert any(n.startswith("nested_svm_triple_fault: L1 does not intercept SHUTDOWN") for n in notes)


def test_svm_triple_fault_with_shutdown_intercept_clears_the_request():
    """With the intercept, nested_svm_triple_fault clears the request itself
    before the SHUTDOWN #VMEXIT, so nothing is left for KVM_EXIT_SHUTDOWN."""
    from impls.upstream.state import KVM_REQ_TRIPLE_FAULT

    d = vcpu_after(scenario("svm", "off", "l2.stack #PF\nl1.vmentry inject=#DF(0x0)\n"))
    assert [str(o) for _, o in d.rec.l1] == ["EXIT SHUTDOWN, IDT-vectoring: #DF(ec=0x0)"]
    assert d.shutdown is None and not d.vcpu.kvm_test_request(KVM_REQ_TRIPLE_FAULT)


@pytest.mark.parametrize("vendor", ["vmx", "svm"])
def test_nested_triple_fault_hooks_own_the_request(vendor):
    """kvm_check_nested_events only tests KVM_REQ_TRIPLE_FAULT (92e7d5c83aff):
    nested_vmx_triple_fault clears it always, nested_svm_triple_fault only
    when L1 intercepts SHUTDOWN; else it survives the call."""
    from impls.upstream.state import KVM_REQ_TRIPLE_FAULT

    for shutdown in (0, 1):
        v = vcpu_after(scenario(vendor, "on", f"l1.intercept shutdown={shutdown}\nl1.vmentry\n")).vcpu
        assert v.is_guest_mode()
        v.kvm_make_request(KVM_REQ_TRIPLE_FAULT)
        assert v.kvm_check_nested_events() == 1
        left = vendor == "svm" and not shutdown
        assert v.kvm_test_request(KVM_REQ_TRIPLE_FAULT) == left
        assert v.is_guest_mode() == left


@pytest.mark.parametrize("vendor", ["vmx", "svm"])
def test_nested_triple_fault_in_vcpu_enter_guest_leaves_it(vendor):
    """After the nested triple-fault exit the v6.1 tag's vcpu_enter_guest
    returns an uninitialised r (fixed by df0bb47baa95); the port takes
    r > 0 and notes it."""
    out = upstream(read_scenario(SEEDS / f"bug-b-triple-fault-l2-{vendor}.txt"))
    assert any("uninitialised r" in n for _, n in out.notes)


def test_interrupt_exit_waits_for_the_nmi_l2_takes_first():
    """v6.1 (26844fee): kvm_vcpu_running no longer calls
    kvm_check_nested_events before vcpu_enter_guest.  With an NMI queued and
    an interrupt L1 intercepts, the NMI is folded in (process_nmi) before
    the nested ladder runs, so L2 takes the NMI first and the interrupt
    exits afterwards, as in the reference.  Before it, the early check saw
    only the interrupt and exited to L1 at once (5.11, the RFC)."""
    s = scenario("vmx", "on", NMI_BEFORE_INTR_EXIT)
    out = upstream(s)
    assert [str(o) for _, o in out.l2] == ["L2 handles INT 0x80 ret=+2", "L2 handles NMI"]
    assert [str(o) for _, o in out.l1] == ["EXIT EXTERNAL_INTERRUPT"]
    assert agrees(s)
    assert set(verdicts(s).values()) == {"fixed"}


def test_kvm_vcpu_running_asks_no_nested_code():
    """kvm_vcpu_running is the mp_state test only: with an interrupt L1
    intercepts pending in L2 it leaves the vCPU in guest mode."""
    v = vcpu_after(scenario("vmx", "on", "l1.intercept intr=1\nl1.vmentry\n")).vcpu
    v.kvm_apic_set_irq(0x21)
    assert v.kvm_vcpu_running() and v.is_guest_mode()
    assert v.nested_ops.check_events(v) == 0 and not v.is_guest_mode()  # what 5.11 did there


def test_entry_cancelled_on_a_request_made_by_the_ladder():
    """kvm_vcpu_exit_request includes any pending request: a nested #VMEXIT
    taken inside kvm_check_and_inject_events makes KVM_REQ_EVENT
    (kvm_set_rflags of L1's RFLAGS), so the entry is cancelled and the
    ladder runs again for L1 before anything is entered."""
    s = scenario("svm", "on", "l1.intercept intr=1\nl1.vmentry\nirq 0x21\nrun\n")
    out = upstream(s)
    assert [str(o) for _, o in out.l1][:1] == ["EXIT INTR"]
    assert any(n.startswith("vcpu_enter_guest: a request is pending after injection") for _, n in out.notes)
    assert agrees(s)


def test_pending_triple_fault_is_exempt_from_the_ladder_warning():
    """dea0d5a2fde6 (6.1-rc): the WARN at the end of
    kvm_check_and_inject_events looks at the two exception slots only; a
    triple fault left for KVM_EXIT_SHUTDOWN (SVM, L1 not intercepting) is no
    alarm."""
    from impls.upstream.state import KVM_REQ_TRIPLE_FAULT

    d = vcpu_after(scenario("svm", "on", "l1.intercept shutdown=0\nl1.vmentry\n"))
    v = d.vcpu
    v.kvm_make_request(KVM_REQ_TRIPLE_FAULT)
    assert v.kvm_check_and_inject_events() == (0, False)
    assert v.kvm_is_exception_pending() and not d.rec.alarms


def test_has_events_counts_a_pending_mtf_exit():
    """nested_ops->has_events (5b4ac1a1; the series had hv_timer_pending) is
    vmx_has_nested_events: an expired preemption timer or a pending MTF exit
    (kvm_check_and_inject_events then asks for an immediate exit); SVM has
    no such hook."""
    v = vcpu_after(scenario("vmx", "on", "l1.vmentry\n")).vcpu
    assert v.nested_ops.has_events.__origin__.function == "vmx_has_nested_events"
    assert not v.nested_ops.has_events(v)
    v.vmx.nested.mtf_pending = True
    assert v.nested_ops.has_events(v)
    assert vcpu_after(scenario("svm", "on", "")).vcpu.nested_ops.has_events is None


def test_injected_error_code_bit_15_is_valid():
    """6.1's nested_check_vm_entry_controls rejects error-code bits 31:16
    only (since 567926cca99b, 5.4: Intel confirmed the SDM's 31:15 is wrong;
    kvm-unit-tests vmx_tests.c tests 31:16 on hardware): L1's #GP(0x8000)
    is delivered to L2, as the reference does."""
    s = scenario("vmx", "on", "l1.intercept\nl1.vmentry inject=#GP(0x8000)\n")
    out = upstream(s)
    assert out.l1 == () and [str(o) for _, o in out.l2] == ["L2 handles #GP(ec=0x8000)"]
    assert compare(s).agree
    big = scenario("vmx", "on", "l1.intercept\nl1.vmentry inject=#GP(0x10000)\n")
    assert [str(o) for _, o in upstream(big).l1] == ["ENTRY FAILED VMfailValid(7)"]


@pytest.mark.parametrize("vendor", ["vmx", "svm"])
def test_pf_on_pf_loses_cr2_with_shadow_paging(vendor):
    """As in 5.11 (still-wrong): a #PF while delivering a #PF, shadow paging.
    kvm_multiple_exception clears the re-injected #PF and queues #DF(0)
    afresh; the second #PF's payload is dropped, CR2 keeps the first
    address (SDM 4.7: CR2 is loaded when the #PF is raised)."""
    s = seed_as("df-pagefault-then-pagefault", vendor, "off")
    assert upstream(s).final.cr2 == 0x8000
    assert verdicts(s) == {"final.cr2": "still-wrong"}


@pytest.mark.parametrize("vendor", ["vmx", "svm"])
def test_user_pending_exception_beside_injected_event(vendor):
    """KVM_SET_VCPU_EVENTS with a pending exception and an injected
    interrupt: kvm_check_and_inject_events injects the exception ("the
    exception occurred before the exit to userspace") and never re-injects
    the interrupt, which the next exit's complete_interrupts drops.  The
    reference reads the pair as an exception raised while the interrupt was
    being delivered (Table 6-5, serial): the same.  5.11 does the same."""
    s = scenario(vendor, "on", "user.set_exception #SS injected=0\nuser.set_irq 0x21\nrun\n", "exception_payload")
    assert [str(o) for _, o in upstream(s).l1] == ["L1 handles #SS(ec=0x0)"]
    assert verdicts(s) == {}


# ---------------------------------------------------------- 6.1 mechanisms --

@pytest.mark.parametrize("vendor", ["vmx", "svm"])
def test_intercepted_exception_morphs_at_queue_time(vendor):
    v = vcpu_after(scenario(vendor, "on", "l1.intercept exceptions=#GP\nl1.vmentry\n")).vcpu
    assert v.is_guest_mode()
    v.kvm_queue_exception_e(13, 0)
    assert v.arch.exception_vmexit.pending and not v.arch.exception.pending
    v.kvm_queue_exception(6)  # #UD, not intercepted: for L2
    assert v.arch.exception.pending and v.arch.exception.vector == 6
    assert v.kvm_is_exception_pending()
    v.kvm_requeue_exception_e(13, 0)  # a re-injection never morphs
    assert v.arch.exception.injected and v.arch.exception.vector == 13


@pytest.mark.parametrize("vendor", ["vmx", "svm"])
def test_triple_fault_event_cap(vendor):
    """KVM_CAP_X86_TRIPLE_FAULT_EVENT: GET reports a pending triple fault
    with VALID_TRIPLE_FAULT, SET restores it; without the cap the flag is
    absent and SET with it is -EINVAL (after applying the rest)."""
    from impls.upstream.state import EINVAL, KVM_REQ_TRIPLE_FAULT, KVM_VCPUEVENT_VALID_TRIPLE_FAULT

    v = vcpu_after(scenario(vendor, "on", "", "triple_fault_event")).vcpu
    v.kvm_make_request(KVM_REQ_TRIPLE_FAULT)
    events = v.kvm_vcpu_ioctl_x86_get_vcpu_events()
    assert events.flags & KVM_VCPUEVENT_VALID_TRIPLE_FAULT and events.triple_fault_pending == 1
    assert v.kvm_test_request(KVM_REQ_TRIPLE_FAULT)  # not consumed
    fresh = vcpu_after(scenario(vendor, "on", "", "triple_fault_event")).vcpu
    assert fresh.kvm_vcpu_ioctl_x86_set_vcpu_events(events) == 0
    assert fresh.kvm_test_request(KVM_REQ_TRIPLE_FAULT)

    plain = vcpu_after(scenario(vendor, "on", "")).vcpu
    plain.kvm_make_request(KVM_REQ_TRIPLE_FAULT)
    assert not plain.kvm_vcpu_ioctl_x86_get_vcpu_events().flags & KVM_VCPUEVENT_VALID_TRIPLE_FAULT
    assert plain.kvm_vcpu_ioctl_x86_set_vcpu_events(events) == -EINVAL


@pytest.mark.parametrize("vendor", ["vmx", "svm"])
def test_user_pending_exception_morphs_at_kvm_run(vendor):
    """With KVM_CAP_EXCEPTION_PAYLOAD userspace can set a pending exception
    in L2; the next KVM_RUN (kvm_arch_vcpu_ioctl_run) morphs it into
    exception_vmexit if L1 intercepts it, and L1 gets the exit."""
    s = scenario(vendor, "on", "l1.intercept exceptions=#GP\nl1.vmentry\nuser.set_exception #GP ec=0x0\nrun\n",
                 "exception_payload")
    (step, exit_), = upstream(s).l1
    assert "#GP" in exit_.reason or (exit_.info is not None and exit_.info.vector == 13)
    assert agrees(s)


@pytest.mark.parametrize("vendor", ["vmx", "svm"])
def test_get_events_reports_exception_vmexit(vendor):
    """The only queued exception being exception_vmexit, GET reports it (as
    pending with the payload cap)."""
    v = vcpu_after(scenario(vendor, "on", "l1.intercept exceptions=#GP\nl1.vmentry\n", "exception_payload")).vcpu
    v.kvm_queue_exception_e(13, 0)
    events = v.kvm_vcpu_ioctl_x86_get_vcpu_events()
    assert events.exception_pending == 1 and events.exception_nr == 13


def test_svm_soft_interrupt_reported_in_exitintinfo():
    """SVM: L1 injects INT 0x80 and its delivery hits a #PF L1 intercepts;
    6.1's svm_complete_interrupts re-queues SOFT events (5.11 dropped them),
    so EXITINTINFO carries the INTn: fixed."""
    s = scenario("svm", "on", "l1.intercept exceptions=#PF\nl2.stack #PF\nl1.vmentry inject=int(0x80) insn_len=2\n")
    (step, exit_), = upstream(s).l1
    (_, expected), = api.load("reference").run(s).l1
    assert exit_.vectoring == expected.vectoring == Ev(EvType.SOFT_INT, 0x80)
    assert api.load("prepatch").run(s).l1[0][1].vectoring is None


def test_svm_nested_exit_leaks_the_restored_next_rip():
    """6.1 gives the VMCB back the next_rip of a soft event it injected
    (svm_complete_soft_interrupt) before it knows the exit goes to L1, and
    nested_svm_vmexit copies that next_rip into vmcb12: L1 reads an nRIP on
    an exception intercept, where the CPU saves zero (APM 15.7.1).  5.11
    has no such restore (it never copied L1's next_rip in the first place)."""
    s = scenario("svm", "on", "l1.intercept exceptions=#PF\nl2.stack #PF\nl1.vmentry inject=int(0x80) insn_len=2\n")
    (_, exit_), = upstream(s).l1
    assert exit_.length == 2
    (_, expected), = api.load("reference").run(s).l1
    assert expected.length is None
    assert verdicts(s) == {"l1": "still-wrong"}


def test_outcome_is_deterministic():
    s = read_scenario(SEEDS / "bug-c-interrupt-lost-svm.txt")
    assert upstream(s) == upstream(s)


@pytest.mark.parametrize("name", ["inject_pending_event", "vmx_queue_exception", "svm_queue_exception",
                                  "nested_vmx_check_exception", "vmx_inject_page_fault_nested",
                                  "nested_vmcb_save_pending_event"])
def test_511_only_functions_are_unreachable(name):
    """A 5.11 function 6.1 removed raises if inherited code reaches it."""
    v = vcpu_after(scenario("vmx", "on", "")).vcpu
    with pytest.raises(NotImplementedError, match="not in Linux 6.1"):
        getattr(v, name)


@pytest.mark.parametrize("vendor", ["vmx", "svm"])
def test_c_fault_during_interrupt_delivery_in_l2_is_delivered(vendor):
    """(C) EPT/NPT off, L1 intercepts nothing: an interrupt delivered to L2
    hits a #PF once.  6.1 blocks a pending exception only on a pending nested
    run (not on re-injection), so the #PF is injected into L2; 5.11 lost
    both through -EBUSY: fixed."""
    s = scenario(vendor, "off", "l1.vmentry\ndelivery_fault #PF ec=0x2 cr2=0x5000\nirq 0x20\nrun\n")
    assert [str(o) for _, o in upstream(s).l2] == ["L2 handles #PF(ec=0x2)"]
    assert set(verdicts(s).values()) == {"fixed"}


def test_c_svm_nmi_in_exitintinfo():
    """(C) SVM, NPT off: an NMI delivered to L2 hits a #PF L1 intercepts; the
    exit carries the NMI in EXITINTINFO (5.11 lost it): fixed."""
    s = scenario("svm", "off", "l1.intercept exceptions=#PF\nl1.vmentry\ndelivery_fault #PF ec=0x2 cr2=0x5000\n"
                 "nmi\nrun\n")
    (step, exit_), = upstream(s).l1
    assert exit_.reason == "EXCP #PF" and str(exit_.vectoring).startswith("NMI")
    assert set(verdicts(s).values()) == {"fixed"}
