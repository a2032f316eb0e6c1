"""The pre-patch port (KVM 5.11) on the simulated CPU.

* every public function of the port names the kernel function it ports;
* on plain SDM/APM cases it gives the reference's outcome, for both vendors;
* on the seed's bug classes it differs from the reference exactly where 5.11
  does, each pinned with the oracle's signature and the 5.11 function that
  causes it (see the comment on each case).
"""
from __future__ import annotations

import inspect
from pathlib import Path

import pytest

import agreement

from fuzz.text import parse_scenario, read_scenario
from impls import api

SEEDS = Path(__file__).resolve().parent.parent / "corpus" / "seeds"


def prepatch(s):
    return api.load("prepatch").run(s)


def agrees(s) -> bool:
    return agreement.agrees("prepatch", s)


def diverges(s, field: str) -> str:
    """The oracle's signature of prepatch's divergence on `field` (the
    signature's wording is the oracle's; it starts with vendor and field)."""
    from fuzz.oracle import compare

    for d in compare(s, ["reference", "prepatch"]).divergences:
        if d.field == field and d.impls == ("prepatch",):
            assert d.signature.startswith(f"{s.config.vendor} {field}"), d.signature
            return d.signature
    raise AssertionError(f"no divergence on {field}")


def scenario(vendor: str, npt: str, body: str):
    paging = "ept" if vendor == "vmx" else "npt"
    return parse_scenario(f"evdiff 1 vendor={vendor} {paging}={npt}\n{body}")


# ---------------------------------------------------------------- origins --

#: Port plumbing that is not a kernel function (accessors of the simulated
#: CPU's state, the alarm helper, observation recording).
PLUMBING = {"warn_on_once", "bug_on", "event_in_flight", "internal_error", "vmcs", "vmx_guest", "svm_guest", "vmx_interruptibility",
            "record_nested_vmexit", "record_nested_svm_vmexit", "svm_hv_timer_pending"}


def test_registered():
    assert "prepatch" in api.names()
    impl = api.load("prepatch")
    assert impl.name == "prepatch" and "5.11" in impl.origin


def test_every_port_function_names_its_origin():
    from impls.prepatch import svm, svm_nested, vcpu, vmx, vmx_nested, x86

    missing = []
    for mod in (x86, vmx, vmx_nested, svm, svm_nested, vcpu):
        for name, obj in vars(mod).items():
            if inspect.isclass(obj) and obj.__module__ == mod.__name__:
                for mname, fn in vars(obj).items():
                    if inspect.isfunction(fn) and not mname.startswith("__") and mname not in PLUMBING \
                            and not hasattr(fn, "__origin__"):
                        missing.append(f"{mod.__name__}.{name}.{mname}")
            elif inspect.isfunction(obj) and obj.__module__ == mod.__name__ and not name.startswith("_") \
                    and name not in ("is_exception_n", "is_nmi", "is_exception") \
                    and not hasattr(obj, "__origin__"):
                missing.append(f"{mod.__name__}.{name}")
    assert not missing, f"port functions without @origin: {missing}"


def test_origins_name_kernel_files():
    from impls.origin import PORTED

    files = {o.file for o in PORTED["5.11-rc7"]}
    assert {"arch/x86/kvm/x86.c", "arch/x86/kvm/vmx/vmx.c", "arch/x86/kvm/vmx/nested.c",
            "arch/x86/kvm/svm/svm.c", "arch/x86/kvm/svm/nested.c"} <= files
    names = {o.function for o in PORTED["5.11-rc7"]}
    for fn in ("kvm_multiple_exception", "inject_pending_event", "vcpu_enter_guest",
               "kvm_vcpu_ioctl_x86_get_vcpu_events", "kvm_vcpu_ioctl_x86_set_vcpu_events",
               "vmx_check_nested_events", "vmcs12_save_pending_event", "__vmx_complete_interrupts",
               "svm_check_nested_events", "nested_vmcb_save_pending_event", "svm_complete_interrupts"):
        assert fn in names


# -------------------------------------------------- agreement with the SDM --

#: Plain cases (no nesting): the #DF table, error codes, NMI blocking, the
#: interrupt shadow.  Run on both vendors with nested paging on.
PLAIN = [
    "df-benign-then-contributory", "df-benign-then-pagefault", "df-contributory-then-contributory",
    "df-contributory-then-pagefault", "df-doublefault-then-contributory",
    "df-doublefault-then-pagefault", "df-pagefault-then-contributory", "df-pagefault-then-pagefault",
    "ec-idt-limit", "ec-interrupt-gate-not-present", "ec-real-mode", "ec-stack-segment",
    "interrupt-priority-nmi-first", "interrupt-shadow-sti", "nmi-blocked-until-iret", "nmi-held-by-mov-ss",
    "save-restore-invisible",
]


def _seed_as(name: str, vendor: str, npt: str):
    text = (SEEDS / f"{name}.txt").read_text()
    body = "\n".join(line for line in text.splitlines() if not line.startswith(("evdiff", ";")))
    header = next(line for line in text.splitlines() if line.startswith("evdiff"))
    caps = [w for w in header.split() if w.startswith("caps=")]
    paging = "ept" if vendor == "vmx" else "npt"
    return parse_scenario(f"evdiff 1 vendor={vendor} {paging}={npt} {' '.join(caps)}\n{body}\n")


@pytest.mark.parametrize("vendor", ["vmx", "svm"])
@pytest.mark.parametrize("name", PLAIN)
def test_plain_sdm_cases_agree(name, vendor):
    assert agrees(_seed_as(name, vendor, "on"))


@pytest.mark.parametrize("vendor", ["vmx", "svm"])
@pytest.mark.parametrize("body", [
    # #GP(ec) delivered with its error code; a second #GP after IRET
    "exception #GP ec=0x18\niret\nexception #GP ec=0x20\n",
    # real mode: no error code pushed, IVT beyond the limit gives #GP
    "l1.mode real\nexception #GP ec=0x8\n",
    # NMI then NMI: the second waits for IRET (SDM 6.7.1)
    "nmi\nrun\nnmi\nrun\niret\nrun\n",
    # an interrupt held by CLI, released by STI after its shadow
    "cli\nirq 0x30\nrun\nsti\nrun\n",
    # the highest pending vector first
    "irq 0x21\nirq 0x40\nrun\n",
    # an L0 fix-up during an interrupt's delivery is invisible
    "l0.mmu_fixup\nirq 0x22\nrun\n",
    # an L0 fix-up during IRET is invisible (NMI blocking stays right)
    "nmi\nrun\nnmi\nl0.mmu_fixup iret\niret\nrun\n",
    # an emulated instruction that faults
    "l0.emulate #GP ec=0x0\n",
    # KVM_SET_VCPU_EVENTS with an injected exception, and KVM_NMI
    "user.set_exception #NP ec=0x10 injected=1\nuser.nmi\nrun\n",
])
def test_small_plain_cases_agree(vendor, body):
    assert agrees(scenario(vendor, "on", body))


@pytest.mark.parametrize("vendor", ["vmx", "svm"])
@pytest.mark.parametrize("name", ["nested-nmi-exit", "nested-vmcall-then-reinject"])
def test_plain_nested_cases_agree(vendor, name):
    file = SEEDS / f"{name}-{vendor}.txt"
    s = read_scenario(file) if file.exists() else _seed_as(f"{name}-vmx", vendor, "on")
    assert agrees(s)


def test_nested_entry_failure_agrees():
    assert agrees(read_scenario(SEEDS / "nested-entry-fails-if-clear.txt"))


# ----------------------------------------------------- the seed's bug classes --

def test_a_svm_lost_first_exception():
    """(A) SVM, NPT off: the #PF during delivery of L1's injected #GP goes to
    L0 (nested_svm_exit_special: L0 intercepts #PF), is queued by
    kvm_inject_page_fault and *replaces* the re-injected #GP in
    kvm_multiple_exception; svm_check_nested_events then reflects the #PF
    with EXITINTINFO built by nested_vmcb_save_pending_event from an empty
    `injected` state."""
    s = read_scenario(SEEDS / "bug-a-lost-first-exception-svm.txt")
    assert not agrees(s)
    (step, exit_), = prepatch(s).l1
    assert exit_.reason == "EXCP #PF" and exit_.vectoring is None
    assert "prepatch" in diverges(s, "l1")


def test_a_svm_soft_interrupt_dropped_from_exitintinfo():
    """(A) SVM, NPT on: L1 injects INT 0x80, its delivery hits a #PF L1
    intercepts; svm_complete_interrupts drops SOFT events, so EXITINTINFO is
    empty."""
    s = scenario("svm", "on", "l1.intercept exceptions=#PF\nl2.stack #PF\nl1.vmentry inject=int(0x80)\n")
    (step, exit_), = prepatch(s).l1
    assert exit_.reason == "EXCP #PF" and exit_.vectoring is None
    assert "prepatch" in diverges(s, "l1")


def test_a_prime_svm_double_fault_instead_of_exit():
    """(A') SVM, NPT off: L1 injects #PF and intercepts #PF; its delivery hits
    one #PF.  kvm_multiple_exception merges the re-injected #PF and the new
    #PF into a pending #DF, which L1 does not intercept: L2 gets a #DF where
    L1 should get a #PF exit with EXITINTINFO = #PF."""
    s = scenario("svm", "off", "l1.intercept exceptions=#PF\nl1.vmentry\ndelivery_fault #PF ec=0x2 cr2=0x4000\n"
                 "l2.vmcall\nl1.vmentry inject=#PF(0x0)\n")
    out = prepatch(s)
    assert [str(o) for _, o in out.l2] == ["L2 handles #DF(ec=0x0)"]
    assert [o.reason for _, o in out.l1] == ["VMMCALL"]  # the vmcall only
    assert "prepatch" in diverges(s, "l1") and "prepatch" in diverges(s, "l2")


def test_a_prime_svm_seed_ends_in_shutdown():
    """The seed's spurious-#DF case on SVM: the merged #DF's delivery faults
    again (the stack always faults), on top of #DF: KVM_REQ_TRIPLE_FAULT,
    a userspace shutdown instead of the #PF exit."""
    s = read_scenario(SEEDS / "bug-df-spurious-svm.txt")
    assert prepatch(s).shutdown == 2
    assert "prepatch" in diverges(s, "shutdown") and "prepatch" in diverges(s, "l1")


@pytest.mark.parametrize("vendor", ["vmx", "svm"])
def test_b_triple_fault_in_l2_not_reflected(vendor):
    """(B) L1 injects #DF; its delivery hits a #PF that L0 sees (shadow
    paging): kvm_multiple_exception on top of the re-injected #DF requests
    KVM_REQ_TRIPLE_FAULT, which vcpu_enter_guest turns into KVM_EXIT_SHUTDOWN
    even in guest mode (5.11 has no nested triple_fault hook)."""
    s = read_scenario(SEEDS / f"bug-b-triple-fault-l2-{vendor}.txt")
    out = prepatch(s)
    assert out.shutdown is not None and out.l1 == ()
    assert "prepatch" in diverges(s, "shutdown") and "prepatch" in diverges(s, "l1")


def test_c_svm_interrupt_lost():
    """(C) SVM, NPT off: an interrupt delivered to L2 hits a #PF L1
    intercepts.  svm_complete_interrupts re-queues the interrupt as injected;
    the #PF is queued pending; inject_pending_event skips re-injecting the
    interrupt because an exception is pending, svm_check_nested_events
    returns -EBUSY (an event needs re-injection), the immediate exit's
    svm_complete_interrupts wipes both: L1 sees nothing."""
    s = read_scenario(SEEDS / "bug-c-interrupt-lost-svm.txt")
    out = prepatch(s)
    assert out.l1 == () and out.l2 == () and out.final.irq_pending == ()
    assert "prepatch" in diverges(s, "l1")


@pytest.mark.parametrize("vendor", ["vmx", "svm"])
def test_c_interrupt_and_fault_lost_in_l2(vendor):
    """(C) EPT/NPT off, L1 intercepts nothing: an interrupt delivered to L2
    hits a #PF once.  The same -EBUSY path as above (vmx_check_nested_events /
    svm_check_nested_events) loses the interrupt and the #PF: L2 handles
    nothing where it should handle the #PF."""
    s = scenario(vendor, "off", "l1.vmentry\ndelivery_fault #PF ec=0x2 cr2=0x5000\nirq 0x20\nrun\n")
    out = prepatch(s)
    assert out.l2 == () and not agrees(s)
    assert "prepatch" in diverges(s, "l2")


def test_c_svm_nmi_lost():
    """(C) SVM, NPT off: an NMI delivered to L2 hits a #PF L1 intercepts: lost
    as the interrupt above, and HF_NMI_MASK stays set."""
    s = scenario("svm", "off", "l1.intercept exceptions=#PF\nl1.vmentry\ndelivery_fault #PF ec=0x2 cr2=0x5000\n"
                 "nmi\nrun\n")
    out = prepatch(s)
    assert out.l1 == () and out.final.nmi_blocked


@pytest.mark.parametrize("name", ["bug-a-lost-first-exception-vmx", "bug-c-interrupt-lost-vmx",
                                  "bug-df-spurious-vmx"])
def test_vmx_shadow_paging_nested_pf_is_right(name):
    """5.11 VMX gets these right: with EPT off, prepare_vmcs02 installs
    vmx_inject_page_fault_nested, which turns a #PF L1 intercepts into a
    nested VM exit at once, with IDT-vectoring from the re-injected event."""
    assert agrees(read_scenario(SEEDS / f"{name}.txt"))


# ------------------------------------------------- other 5.11 deviations --

@pytest.mark.parametrize("vendor", ["vmx", "svm"])
def test_pf_on_pf_loses_cr2_with_shadow_paging(vendor):
    """Not nested, shadow paging: a #PF while delivering a #PF.  KVM merges
    the re-injected #PF and the new one into #DF in kvm_multiple_exception,
    dropping the second #PF's payload: CR2 keeps the first address."""
    s = _seed_as("df-pagefault-then-pagefault", vendor, "off")
    out = prepatch(s)
    assert out.final.cr2 == 0x8000 and not agrees(s)


@pytest.mark.parametrize("vendor", ["vmx", "svm"])
def test_any_exception_during_double_fault_delivery_is_a_triple_fault(vendor):
    """SDM Table 6-5 handles a benign exception (#MC here) during #DF delivery
    serially; kvm_multiple_exception makes any exception on top of an
    injected #DF a triple fault (KVM_REQ_TRIPLE_FAULT), whatever its class."""
    out = prepatch(_seed_as("df-doublefault-then-benign", vendor, "on"))
    assert out.shutdown is not None
    assert not agrees(_seed_as("df-doublefault-then-benign", vendor, "on"))


def test_user_exception_without_payload_cap_bypasses_l1():
    """Without KVM_CAP_EXCEPTION_PAYLOAD, KVM_SET_VCPU_EVENTS can only set an
    injected exception: it reaches L2 without L1's intercept check, and the
    scenario means that for the reference too (fuzz.scenario.Scenario)."""
    body = "l1.intercept exceptions=#GP\nl1.vmentry\nuser.set_exception #GP ec=0x0\nrun\n"
    no_cap = scenario("vmx", "on", body)
    assert agrees(no_cap) and [str(o) for _, o in prepatch(no_cap).l2] == ["L2 handles #GP(ec=0x0)"]
    with_cap = parse_scenario("evdiff 1 vendor=vmx caps=exception_payload\n" + body)
    assert agrees(with_cap) and prepatch(with_cap).final.level == 1


def test_svm_nmi_mask_is_one_mask_for_both_levels():
    """SVM: HF_NMI_MASK from an NMI KVM injected into L2 is not cleared by
    nested_svm_vmexit, so L1 runs with NMIs masked.  Without vNMI the VMCB
    holds no NMI mask, and the reference keeps one mask for L1 and L2 too:
    they agree."""
    s = scenario("svm", "on", "l1.vmentry\nnmi\nrun\nl2.vmcall\nnmi\nrun\n")
    assert prepatch(s).final.nmi_blocked and agrees(s)


def test_outcome_is_deterministic():
    s = read_scenario(SEEDS / "bug-c-interrupt-lost-svm.txt")
    assert prepatch(s) == prepatch(s)


def test_svm_intercepted_interrupt_livelock():
    """SVM: L1 intercepts INTR (with V_INTR_MASKING) but ran VMRUN with IF=0.
    svm_check_nested_events sees the interrupt blocked (L1's IF) and makes no
    exit, while svm_interrupt_allowed returns -EBUSY before it looks at the
    blocking: inject_pending_event requests an immediate exit on every entry.
    (A later upstream patch checks svm_interrupt_blocked first.)"""
    s = scenario("svm", "on", "l1.intercept intr=1\ncli\nl1.vmentry\nirq 0x20\nrun\n")
    assert prepatch(s).livelock is not None
    assert agrees(scenario("vmx", "on", "l1.intercept intr=1\ncli\nl1.vmentry\nirq 0x20\nrun\n"))


def _driver_after(vendor: str, body: str):
    """A prepatch driver that has run `body`'s events, not the final run: for
    VMM steps the scenario language gives another meaning (see
    impls.arch.possible and the mode change as an instruction)."""
    from impls.api import HANDLER
    from impls.prepatch.driver import Driver
    from impls.prepatch.vcpu import Vcpu

    d = Driver(scenario(vendor, "on", body), Vcpu)
    for step, ev in enumerate(d.events):
        d.rec.step = step
        getattr(d, HANDLER[ev.kind])(ev)
    return d


def test_vmx_stale_error_code_flag_fails_entry():
    """VMX: an exception set with an error code while L1 was in protected
    mode is injected after the VMM switched L1 to real mode (KVM_SET_SREGS
    after KVM_SET_VCPU_EVENTS): kvm_multiple_exception decided
    has_error_code at queue time (RFC patch 1/4 moves that to injection), the
    VM entry fails (SDM 26.2.1.3) and KVM exits with KVM_EXIT_FAIL_ENTRY.
    In a scenario, `l1.mode real` is an instruction after the delivery."""
    from impls.arch import Mode

    d = _driver_after("vmx", "user.set_exception #GP ec=0x0 injected=1\n")
    d.cpu.set_desc(1, mode=Mode.REAL)
    d.ev_run(None)
    assert any(a.startswith("KVM_EXIT_FAIL_ENTRY") for a in d.outcome().alarms)
    assert agrees(scenario("vmx", "on", "user.set_exception #GP ec=0x0 injected=1\nl1.mode real\nrun\n"))


@pytest.mark.parametrize("vendor", ["vmx", "svm"])
def test_user_injected_interrupt_with_if_clear(vendor):
    """KVM_SET_VCPU_EVENTS accepts an interrupt injected while IF=0 and KVM
    re-injects it without looking at IF: on VMX the VM entry fails (SDM
    26.3.1.5, exit reason 0x80000021), SVM's EVENTINJ does not check IF and
    delivers it.  No VMM sets that state (no CPU acknowledges an interrupt
    with IF=0): in a scenario `user.set_irq` then does nothing."""
    d = _driver_after(vendor, "cli\n")
    events = d.vcpu.kvm_vcpu_ioctl_x86_get_vcpu_events()
    events.interrupt_injected, events.interrupt_nr, events.interrupt_soft = 1, 0x30, 0
    d._set_events(events)
    d.ev_run(None)
    out = d.outcome()
    if vendor == "vmx":
        assert any("0x80000021" in a for a in out.alarms)
    else:
        assert [str(o) for _, o in out.l1] == ["L1 handles ext-int 0x30"]
    assert agrees(scenario(vendor, "on", "cli\nuser.set_irq 0x30\nrun\n"))


#: The primary divergence of prepatch against the reference on each seed bug
#: scenario, as the oracle names it (None: 5.11 agrees there, see
#: test_vmx_shadow_paging_nested_pf_is_right for why).
SEED_SIGNATURES = {
    "bug-a-lost-first-exception-svm":
        "svm l1 [prepatch: EXIT EXCP #PF, IDT-vectoring: none] expected: EXIT EXCP #PF, IDT-vectoring: exception",
    "bug-a-lost-first-exception-vmx": None,
    "bug-b-triple-fault-l2-svm": "svm l1 [prepatch: nothing] expected: EXIT SHUTDOWN, IDT-vectoring: undefined",
    "bug-b-triple-fault-l2-vmx": "vmx l1 [prepatch: nothing] expected: EXIT TRIPLE_FAULT, IDT-vectoring: none",
    "bug-c-interrupt-lost-svm": "svm l1 [prepatch: nothing] expected: EXIT EXCP #PF, IDT-vectoring: ext-int",
    "bug-c-interrupt-lost-vmx": None,
    "bug-df-spurious-svm": "svm l1 [prepatch: nothing] expected: EXIT EXCP #PF, IDT-vectoring: #PF",
    "bug-df-spurious-vmx": None,
}


@pytest.mark.parametrize("name", sorted(SEED_SIGNATURES))
def test_seed_bug_class_signature(name):
    from fuzz.oracle import compare

    report = compare(read_scenario(SEEDS / f"{name}.txt"), ["reference", "prepatch"])
    assert (report.primary.signature if report.primary else None) == SEED_SIGNATURES[name]
