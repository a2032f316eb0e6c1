"""KVM's state as of Linux 6.1, where it differs from the 5.11 structures of
`impls.prepatch.state` (which this module re-exports for everything else).

* struct kvm_queued_exception is a named struct (d4963e31); its vector field
  is called `vector` (5.11: `nr`) and `nested_apf` is gone.
* struct kvm_vcpu_arch gains a second queued exception, `exception_vmexit`
  (7709aba8): an exception L1 intercepts, already turned into a pending
  nested VM exit when it was queued; and `exception_from_userspace`, set by
  KVM_SET_VCPU_EVENTS for the next KVM_RUN.
* struct kvm_arch gains `triple_fault_event` (KVM_CAP_X86_TRIPLE_FAULT_EVENT),
  and struct kvm_vcpu_events its `triple_fault.pending` with the flag
  KVM_VCPUEVENT_VALID_TRIPLE_FAULT.
* struct vcpu_svm gains `nmi_l1_to_l2` and `soft_int_injected` (the SVM
  event fixes of 5.19/6.0 that 6.1 carries).

Only the fields the event paths use are here.  Names are KVM's.
"""
from __future__ import annotations

from impls.prepatch.state import *  # noqa: F401,F403 -- the unchanged 5.11 names
from impls.prepatch.state import KvmVcpuEvents as _KvmVcpuEvents511
from impls.prepatch.state import KvmQueuedInterrupt, NestedSvm, VcpuSvm

TREE = "6.1"

# --------------------------------------------------------- where it was read --
#
# The v6.1 tag is not stored (SOURCES.md section 3).  Every function of this
# port was re-read (issue 13) in two copies and names the one it follows in
# `Origin.read`:
#
# * `STABLE`: Linux 6.1.55 whole (the first commit of mjsmar/snpport-6.1.55,
#   before that repository's own patches), for code unchanged between the tag
#   and 6.1.55.  Where 6.1.55 carries a later fix (a stable backport), the
#   function says so and follows the tag instead.
# * `MERGE_WINDOW`: x86.c at 26844fee (the 6.1 merge window, after the
#   exception series and the INIT/SIPI series), plus the 6.1-rc commits on the
#   same functions as posted: 92e7d5c83aff (6.1-rc7, "allow L1 to not
#   intercept triple fault") and dea0d5a2fde6 (6.1-rc, "Exempt pending triple
#   fault from event injection sanity check").
STABLE = "mjsmar/snpport-6.1.55 f91cf3e9 (6.1.55)"
MERGE_WINDOW = "torvalds/linux x86.c 26844fee (6.1 merge window)"

# ------------------------------------------------------------- constants --

#: struct kvm_vcpu_events flag for `triple_fault.pending` (uapi kvm.h, 5.19+).
KVM_VCPUEVENT_VALID_TRIPLE_FAULT = 0x20

#: exception_type() classes (x86.c); EXCPT_DB is new in 6.1.
EXCPT_DB = 4

#: DR6 bits (asm/debugreg.h): the trap bits B0-B3, the bits that are 1
#: when inactive (fixed-1 bits and RTM), BD and BT.
DR_TRAP_BITS = 0xF
DR6_ACTIVE_LOW = 0xFFFF0FF0
DR6_BD = 1 << 13
DR6_BS = 1 << 14
DR6_BT = 1 << 15

#: SVM exit code for a triple fault (svm.h); SVM_EXITINTINFO type values.
SVM_EXIT_SHUTDOWN = 0x7F
X86_TRAP_VC = 29


class KvmQueuedException:
    """struct kvm_queued_exception (kvm_host.h, 6.1): used twice, as
    vcpu->arch.exception and vcpu->arch.exception_vmexit."""

    __slots__ = ("pending", "injected", "has_error_code", "vector", "error_code", "payload", "has_payload")

    def __init__(self):
        self.pending = self.injected = self.has_error_code = False
        self.vector = 0
        self.error_code = 0
        self.payload = 0
        self.has_payload = False


class KvmVcpuArch:
    """The part of struct kvm_vcpu_arch the 6.1 event paths use."""

    __slots__ = ("exception", "exception_vmexit", "exception_from_userspace", "interrupt", "nmi_pending",
                 "nmi_queued", "nmi_injected", "smi_pending", "hflags", "dr6", "dr7", "event_exit_inst_len",
                 "apf_host_apf_flags", "exit_qualification", "mp_state")

    def __init__(self):
        from impls.prepatch.state import DR6_INIT, DR7_FIXED_1, KVM_MP_STATE_RUNNABLE

        self.exception = KvmQueuedException()
        self.exception_vmexit = KvmQueuedException()
        self.exception_from_userspace = False
        self.interrupt = KvmQueuedInterrupt()
        self.nmi_pending = 0
        self.nmi_queued = 0
        self.nmi_injected = False
        self.smi_pending = False
        self.hflags = 0
        self.dr6 = DR6_INIT
        self.dr7 = DR7_FIXED_1
        self.event_exit_inst_len = 0
        self.apf_host_apf_flags = 0
        self.exit_qualification = 0
        self.mp_state = KVM_MP_STATE_RUNNABLE  # the reset BSP


class Kvm:
    """struct kvm_arch: the two VM-wide caps of the event ABI."""

    __slots__ = ("exception_payload_enabled", "triple_fault_event")

    def __init__(self, exception_payload_enabled: bool, triple_fault_event: bool):
        self.exception_payload_enabled = exception_payload_enabled
        self.triple_fault_event = triple_fault_event


class KvmVcpuEvents(_KvmVcpuEvents511):
    """struct kvm_vcpu_events with `triple_fault.pending` (flattened as
    `triple_fault_pending`), which 5.19 carved out of the reserved bytes."""

    __slots__ = ("triple_fault_pending",)

    def __init__(self):
        for f in _KvmVcpuEvents511.__slots__ + self.__slots__:
            setattr(self, f, 0)


class NestedSvm61(NestedSvm):
    """svm->nested plus the one bit of vmcb01's saved RFLAGS the 6.1
    #VMEXIT path reads besides IF: TF (as svm_get_rflags reports it)."""

    __slots__ = ("hsave_rflags_tf",)

    def __init__(self):
        super().__init__()
        self.hsave_rflags_tf = False


class VcpuSvm61(VcpuSvm):
    """struct vcpu_svm, event part, with the 6.1 flags for events L1
    injected into L2 (an NMI: no L0 NMI masking; a soft event: the
    next_rip / RIP fix-up on re-injection)."""

    __slots__ = ("nmi_l1_to_l2", "soft_int_injected", "soft_int_csbase", "soft_int_old_rip", "soft_int_next_rip")

    def __init__(self):
        super().__init__()
        self.nested = NestedSvm61()
        self.nmi_l1_to_l2 = False
        self.soft_int_injected = False
        self.soft_int_csbase = 0  # CS.base: 0 here (segments are not modelled)
        self.soft_int_old_rip = 0
        self.soft_int_next_rip = 0
