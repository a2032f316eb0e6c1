"""SMIs and the SMM round trip in the KVM ports (prepatch, the RFC's two
postings, 6.1): when KVM takes the SMI (inject_pending_event /
kvm_check_and_inject_events, smi_allowed, the nested SMI rungs), where RSM
returns (vmx/svm pre_leave_smm / leave_smm), and what the guest can see.
Where a port agrees with the reference it is checked through the oracle
(tests/agreement.py); where it does not, the divergence is pinned with the
KVM function responsible."""
from __future__ import annotations

import pytest

import agreement
from fuzz.oracle import compare
from fuzz.text import parse_scenario
from impls import api

PORTS = ("prepatch", "postpatch", "postpatch-v2", "upstream")


def sc(vendor: str, body: str):
    return parse_scenario(f"evdiff 1 vendor={vendor}\n{body}")


def run(name: str, s):
    return api.load(name).run(s)


def l1(out):
    return [(step, str(o)) for step, o in out.l1]


def l2(out):
    return [(step, str(o)) for step, o in out.l2]


# ------------------------------------------------------------- agreement --

AGREE = {
    "vmx-l1": ("vmx", "smi\nrun\n"),
    "svm-l1": ("svm", "smi\nrun\n"),
    "vmx-l2-nmi-before": ("vmx", "l1.vmentry\nnmi\nsmi\nrun\n"),
    "svm-l2-nmi-before": ("svm", "l1.vmentry\nnmi\nsmi\nrun\n"),
    "vmx-l2-nmi-exiting": ("vmx", "l1.intercept nmi=1\nl1.vmentry\nnmi\nsmi\nrun\n"),
    "svm-l2-back-to-l1": ("svm", "l1.vmentry\nsmi\nrun\nl2.vmcall\n"),
    "svm-intercepted": ("svm", "l1.intercept smi=1\nl1.vmentry\nsmi\nrun\nstgi\n"),
    "svm-gif": ("svm", "clgi\nsmi\nrun\nstgi\n"),
    "vmx-reinjection-l1": ("vmx", "user.set_irq 0x30\nsmi\nrun\n"),
    "vmx-reinjection-l2": ("vmx", "l1.vmentry\nuser.set_irq 0x30\nsmi\nrun\n"),
    "svm-fixup-then-injection": ("svm", "l1.vmentry\nl0.mmu_fixup\nl2.vmcall\nsmi\nl1.vmentry inject=intr(0x20)\nrun\n"),
    "vmx-migrate": ("vmx", "smi\nuser.migrate\nrun\n"),
    "svm-migrate-held": ("svm", "clgi\nsmi\nuser.migrate\nstgi\n"),
}


@pytest.mark.parametrize("port", PORTS)
@pytest.mark.parametrize("case", sorted(AGREE))
def test_smi_scenarios_agree_with_the_reference(port, case):
    vendor, body = AGREE[case]
    assert agreement.agrees(port, sc(vendor, body))


# ----------------------------------------------------------- what is seen --


@pytest.mark.parametrize("port", PORTS)
def test_vmx_smi_in_l2_returns_to_l2_and_the_nmi_follows(port):
    """vmx_check_nested_events' SMI rung lets inject_pending_event take the
    SMI; vmx_pre_enter_smm leaves guest mode with exit reason -1 (no exit
    for L1), vmx_pre_leave_smm re-enters L2, and the NMI queued before the
    SMI (-EBUSY behind it) goes to L2 after RSM."""
    out = run(port, sc("vmx", "l1.vmentry\nnmi\nsmi\nrun\n"))
    assert l1(out) == [(3, "SMI handled in SMM (L2 running)")]
    assert l2(out) == [(3, "L2 handles NMI")]
    assert out.final.level == 2 and out.final.smi_pending is False


@pytest.mark.parametrize("port", PORTS)
def test_svm_smi_in_l2_leaves_no_vmexit_for_l1(port):
    """svm_pre_enter_smm / svm_enter_smm emulate a #VMEXIT (with a stale
    exit code in 5.11, SVM_EXIT_SW in 6.1) that L1 never sees: RSM re-enters
    L2 from vmcb12 first.  The next exit L1 sees is L2's VMMCALL."""
    out = run(port, sc("svm", "l1.vmentry\nsmi\nrun\nl2.vmcall\n"))
    assert l1(out) == [(2, "SMI handled in SMM (L2 running)"), (3, "EXIT VMMCALL")]
    assert out.final.level == 1


@pytest.mark.parametrize("port", PORTS)
def test_svm_intercepted_smi_exits_and_stays_pending_under_gif0(port):
    """The SMI rung of svm_check_nested_events: #VMEXIT(SMI) (nested_svm_smi
    / nested_svm_simple_vmexit), smi_pending kept, held by GIF=0
    (svm_smi_blocked) until L1's STGI."""
    s = sc("svm", "l1.intercept smi=1\nl1.vmentry\nsmi\nrun\n")
    out = run(port, s)
    assert l1(out) == [(3, "EXIT SMI")]
    assert out.final.smi_pending is True and out.final.level == 1
    out = run(port, sc("svm", "l1.intercept smi=1\nl1.vmentry\nsmi\nrun\nstgi\n"))
    assert l1(out) == [(3, "EXIT SMI"), (5, "SMI handled in SMM (L1 running)")]
    assert out.final.smi_pending is False


@pytest.mark.parametrize("port", PORTS)
def test_svm_smi_held_by_gif_until_stgi(port):
    out = run(port, sc("svm", "clgi\nsmi\nrun\n"))
    assert l1(out) == [] and out.final.smi_pending is True
    out = run(port, sc("svm", "clgi\nsmi\nrun\nstgi\n"))
    assert l1(out) == [(4, "SMI handled in SMM (L1 running)")]


@pytest.mark.parametrize("port", PORTS)
@pytest.mark.parametrize("vendor", ("vmx", "svm"))
def test_smi_waits_for_the_event_being_reinjected(port, vendor):
    """An interrupt in flight (KVM_SET_VCPU_EVENTS) is re-injected first:
    can_inject is false, so the SMI branch is -EBUSY (and in L2 the SMI
    rung of check_events is -EBUSY); the SMI comes after the delivery."""
    out = run(port, sc(vendor, "l1.vmentry\nuser.set_irq 0x30\nsmi\nrun\n"))
    assert l2(out) == [(3, "L2 handles ext-int 0x30")]
    assert l1(out) == [(3, "SMI handled in SMM (L2 running)")]


@pytest.mark.parametrize("port", PORTS)
def test_migration_carries_a_pending_smi(port):
    """KVM_GET_VCPU_EVENTS processes KVM_REQ_SMI into smi.pending, and
    KVM_SET_VCPU_EVENTS sets it in the new vCPU, where GIF=0 still holds
    it until STGI."""
    out = run(port, sc("svm", "clgi\nsmi\nuser.migrate\nrun\n"))
    assert l1(out) == [] and out.final.smi_pending is True
    out = run(port, sc("svm", "clgi\nsmi\nuser.migrate\nstgi\n"))
    assert l1(out) == [(4, "SMI handled in SMM (L1 running)")]


@pytest.mark.parametrize("port", PORTS)
def test_smm_never_outlives_a_kvm_run(port):
    """The SMM handler's RSM comes right after enter_smm, before the guest
    executes anything (here an NMI forces an immediate exit in between):
    no alarm, no livelock, SMM left."""
    out = run(port, sc("vmx", "nmi\nsmi\nl1.vmentry\n"))
    assert out.alarms == () and out.livelock is None
    assert l1(out)[0] == (2, "SMI handled in SMM (L1 running)")
    assert out.final.level == 2


# ------------------------------------------------------------ divergences --


@pytest.mark.parametrize("port", PORTS)
@pytest.mark.parametrize("vendor", ("vmx", "svm"))
def test_the_interrupt_shadow_is_lost_across_smm(port, vendor):
    """KVM takes an SMI under an STI shadow (vmx_smi_allowed /
    svm_smi_allowed do not look at it), enter_smm saves no interrupt shadow
    in SMRAM (5.11 and 6.1 alike; 6.2 added it), and the emulated RSM's
    writeback in x86_emulate_instruction drops the shadow
    (toggle_interruptibility with no interruptibility).  So the interrupt
    the shadow held is delivered before the next instruction; the reference
    either holds the SMI under the shadow or restores the shadow at RSM,
    and in both the #GP comes first.  On VMX the shadow stays in vmcs01
    while enter_smm clears IF, so entering the SMM handler fails (blocking
    by STI with IF=0, SDM 26.3.1.5): KVM_EXIT_FAIL_ENTRY 0x80000021, the
    failure fb28875fd7da (6.2, "KVM: x86: smm: preserve interrupt shadow in
    SMRAM") names as the Windows guests' VM-entry failure."""
    s = sc(vendor, "cli\nsti\nsmi\nirq 0x20\nexception #GP\n")
    out = run(port, s)
    r = compare(s, ["reference", port])
    assert not r.agree
    if vendor == "vmx":
        assert out.alarms == ("KVM_EXIT_FAIL_ENTRY(0) 0x80000021",)
        assert any(d.field == "alarms" for d in r.divergences)
        return
    assert l1(out) == [(4, "SMI handled in SMM (L1 running)"), (4, "L1 handles ext-int 0x20"),
                       (4, "L1 handles #GP(ec=0x0)")]
    assert any(d.field == "l1" and d.signature.startswith(f"{vendor} l1 [{port}: L1 handles ext-int]")
               for d in r.divergences)

