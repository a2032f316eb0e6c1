"""What no CPU can produce, and the one meaning every implementation gives it.

The event language can name situations that have no architectural meaning:
an instruction raising an exception its mode cannot raise, or userspace
(KVM_SET_VCPU_EVENTS) claiming the vCPU was delivering an event it could
not have recognised.  The reference and the KVM ports' driver must be handed
the same architectural situation, so both ask this module (the README's
event table documents each meaning):

* `raised`: an instruction that "raises #BR" or "#OF" in 64-bit mode raises
  #UD; one that "raises #PF", #TS, #NP or #AC in real mode raises nothing;
* `exception_settable`: userspace sets no exception a vCPU in that mode could
  not have raised (the event does nothing);
* `delivery_fault_applies`: an MMU fault armed for the next delivery
  (`delivery_fault #PF`) does not hit a delivery made after the level left
  paging for real mode (the fault is dropped);
* `in_flight_possible`: userspace sets no NMI or interrupt in flight in a
  state where no CPU recognises one, which is what VM entry refuses to
  inject (the event does nothing);
* `raised_or_in_flight_possible`: nor, in a halted vCPU, an exception it
  raised or any event in flight (the event does nothing).
"""
from __future__ import annotations

from impls.arch import AC, BR, NP, OF, PF, TS, UD, Mode
from impls.arch.events import EvType


def raised(vector: int, mode: Mode) -> int | None:
    """The exception an instruction raises where the scenario says it
    raises `vector` at a level in `mode`, or None for none.  #BR comes only
    from BOUND and #OF only from INTO (SDM Table 6-1), both invalid opcodes
    in 64-bit mode (SDM2 BOUND, "64-Bit Mode Exceptions": #UD; SDM2 INT
    n/INTO/INT3/INT1, IA-32e mode: "IF INTO and CS.L = 1 (64-bit mode) THEN
    #UD"): there they raise #UD.  A #PF needs paging, which real mode does
    not have (SDM 20.1; SDM 4.1: paging requires CR0.PE=1), and #TS and #NP
    need descriptors (a TSS, segment and gate descriptors), which real mode
    does not use (SDM 20.1; SDM2 lists only #GP and #SS among its
    "Real-Address Mode Exceptions"), and #AC comes only at CPL 3 (SDM 6.15,
    "Interrupt 17"), which real mode is not: there the instruction raises
    nothing and completes.  Every other vector is itself."""
    if vector in (BR, OF) and mode is Mode.LONG:
        return UD
    if vector in _NOT_IN_REAL_MODE and mode is Mode.REAL:
        return None
    return vector


#: Exceptions no instruction raises in real mode (`raised`).
_NOT_IN_REAL_MODE = frozenset({TS, NP, PF, AC})


def delivery_fault_applies(vector: int, mode: Mode) -> bool:
    """Whether a fault armed for the next delivery (the scenario's
    `delivery_fault`, an MMU fault) can hit a delivery made in `mode`: a #PF
    needs paging, which real mode does not have (SDM 20.1; SDM 4.1: paging
    requires CR0.PE=1).  The level's mode may have changed since the fault
    was armed; where it cannot apply, it is dropped."""
    return not (vector == PF and mode is Mode.REAL)


def exception_settable(vector: int, mode: Mode) -> bool:
    """Whether a vCPU at a level in `mode` can hold exception `vector`
    pending or in flight: only an exception an instruction can raise there
    (`raised`).  SVM's VMRUN refuses such an EVENTINJ (APM 15.20: #BR in
    64-bit mode gives VMEXIT_INVALID)."""
    return raised(vector, mode) == vector


def in_flight_possible(kind: EvType, rflags_if: bool, shadow: str | None, nmi_blocked: bool) -> bool:
    """Whether a CPU can be delivering an NMI or external interrupt
    (`kind`) in this state of the level, i.e. could have recognised it.  An
    external interrupt needs IF=1 and no STI or MOV-SS blocking (SDM 6.8.1,
    6.8.3); an NMI needs NMIs unblocked (SDM 6.7.1) and no MOV-SS blocking
    (SDM Table 24-3).  These are the checks VMX entry makes on an injected
    event against the guest's interruptibility state (SDM 26.3.1.5, with
    virtual NMIs for blocking by NMI); NMI under STI blocking, which SDM
    26.3.1.5 leaves IMPL-SPECIFIC, is possible here.  `shadow` is "sti",
    "movss" or None."""
    if kind is EvType.EXT_INTR:
        return rflags_if and shadow is None
    if kind is EvType.NMI:
        return not nmi_blocked and shadow != "movss"
    return True


def raised_or_in_flight_possible(halted: bool) -> bool:
    """Whether a level can have raised an exception, or be delivering an
    event, in the HLT state: no.  A halted processor executes no
    instruction, so it raises nothing, and an event it takes ends the HLT
    state before its delivery (SDM2 HLT: execution resumes, the saved
    return address is the instruction after the HLT); a halted vCPU holds
    only events not yet taken."""
    return not halted
