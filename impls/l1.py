"""What the scenario's L1 hypervisor does with L2's state.

L1 is part of the scenario, not of the implementation under test: the
reference (`impls.reference.model`) and the KVM ports' L1 (the driver shared
by every port, `impls.prepatch.driver`) apply these same definitions to
their L2 state -- the reference's `LevelState`, or the simulated CPU's,
which plays vmcs12 / vmcb12 there.  Both have `shadow` (None, "sti",
"movss", or "both", which only L1 writes and VM entry refuses),
`rflags_if`, `pending_dbg` (None, "bs" or "b0": VMX's pending debug
exceptions), `nmi_blocked` (VMX's blocking by NMI) and `rip` (instructions
completed at that level).
"""
from __future__ import annotations

from impls.api import VmExit
from impls.arch import Ev, EvType
from impls.arch import svm as asvm
from impls.arch import vmx as avmx

#: The exits L1 handles by emulating the instruction that caused them, then
#: resuming L2 after it: `l2.vmcall`'s VMCALL (VMX basic exit reason 18,
#: SDM App. C) and VMMCALL (SVM exit code 0x81, APM App. C), and HLT under
#: L1's HLT exiting / HLT intercept (VMX reason 12, SVM 0x78), which L1
#: completes at once, as kvm-unit-tests' HLT tests do (x86/vmx_tests.c and
#: x86/svm_tests.c skip the HLT and resume).
EMULATED = frozenset({avmx.reason_name(avmx.VMCALL), asvm.exit_name(asvm.EXIT_VMMCALL),
                      avmx.reason_name(avmx.HLT), asvm.exit_name(asvm.EXIT_HLT)})


def handle_exit(exit_, l2) -> None:
    """L1's answer to a nested exit it observed, before its next entry.

    For an exit in `EMULATED` L1 skips the instruction the way KVM's own
    skip_emulated_instruction does: L2's RIP moves past it, and L2's
    blocking by STI / MOV SS ends (VMX: bits 0-1 of vmcs12's guest
    interruptibility state, SDM Table 24-3; SVM: vmcb12's INTERRUPT_SHADOW,
    APM 15.21.5).  The exit itself leaves that blocking in place: VMCALL /
    VMMCALL do not complete, and an exit saves the state of the moment it
    commences (SDM 27.3; APM 15.21.5 saves the shadow at #VMEXIT).  L1
    changes nothing after any other exit.
    """
    if isinstance(exit_, VmExit) and exit_.reason in EMULATED:
        l2.rip += 1
        l2.shadow = None


def prepare_entry(inject: Ev | None, l2, vendor: str) -> None:
    """What L1 writes into L2's state before an entry that injects `inject`.

    VMX: re-injecting an NMI, L1 clears blocking by NMI in vmcs12's guest
    interruptibility state, as SDM 31.7.1.2 tells a VMM to (with virtual
    NMIs, injecting an NMI under virtual-NMI blocking fails the entry, SDM
    26.3.1.5).  SVM: the VMCB holds no NMI mask (no vNMI): nothing to clear.
    """
    if inject is not None and inject.type is EvType.NMI and vendor == "vmx":
        l2.nmi_blocked = False


def write_guest_state(l2, interruptibility: str, rflags_if: str, pending_dbg: str) -> None:
    """L1's edits of L2's saved state before an entry (`l1.vmentry`): the
    blocking by STI / MOV SS (VMX guest interruptibility state bits 0-1, SDM
    24.4.2 Table 24-3; SVM vmcb12's INTERRUPT_SHADOW, APM 15.21.5: the
    scenario gives it `sti`, `fuzz.scenario.svm_vmentry`), RFLAGS.IF (SDM
    24.4.1, APM 15.5.1) and VMX's pending debug exceptions (SDM 24.4.2
    Table 24-4).  `keep` leaves the field as the last exit saved it; `both`
    is bits 0 and 1 together."""
    if interruptibility != "keep":
        l2.shadow = None if interruptibility == "none" else interruptibility
    if rflags_if != "keep":
        l2.rflags_if = rflags_if == "1"
    l2.pending_dbg = None if pending_dbg == "none" else pending_dbg
