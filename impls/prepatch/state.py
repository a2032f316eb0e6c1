"""KVM's state, as in arch/x86/include/asm/kvm_host.h (13ffb97a, Feb 2021) and
the uapi struct kvm_vcpu_events (arch/x86/include/uapi/asm/kvm.h, 59073aaf),
plus the vendor-private state the event paths use (vmx.h / svm.h of 5.11)
and the nested structures L1 writes (vmcs12, vmcb12).

Only the fields the event paths read or write are here.  Names are KVM's.
"""
from __future__ import annotations

from impls.hw.cpu import Vmcb, Vmcs

TREE = "5.11-rc7"

# ------------------------------------------------------------ errno values --
EINTR = 4
EBUSY = 16
EINVAL = 22
EEXIST = 17
ENXIO = 6

# ------------------------------------------------------- KVM_REQ_* requests --
# KVM_ARCH_REQ(n) is bit 8 + n (kvm_host.h).
KVM_REQ_TRIPLE_FAULT = 1 << (8 + 2)
KVM_REQ_EVENT = 1 << (8 + 6)
KVM_REQ_NMI = 1 << (8 + 9)
KVM_REQ_SMI = 1 << (8 + 12)
KVM_REQ_GET_NESTED_STATE_PAGES = 1 << (8 + 24)

REQUEST_NAMES = {KVM_REQ_TRIPLE_FAULT: "TRIPLE_FAULT", KVM_REQ_EVENT: "EVENT", KVM_REQ_NMI: "NMI",
                 KVM_REQ_SMI: "SMI", KVM_REQ_GET_NESTED_STATE_PAGES: "GET_NESTED_STATE_PAGES"}

# --------------------------------------------------------------- hflags --
HF_GIF_MASK = 1 << 0
HF_NMI_MASK = 1 << 3
HF_IRET_MASK = 1 << 4
HF_GUEST_MASK = 1 << 5
HF_SMM_MASK = 1 << 6
HF_SMM_INSIDE_NMI_MASK = 1 << 7

# ------------------------------------------------ struct kvm_mp_state values --
# (uapi linux/kvm.h)
KVM_MP_STATE_RUNNABLE = 0
KVM_MP_STATE_UNINITIALIZED = 1
KVM_MP_STATE_INIT_RECEIVED = 2
KVM_MP_STATE_HALTED = 3
KVM_MP_STATE_SIPI_RECEIVED = 4

# ------------------------------------- apic->pending_events bits (lapic.h) --
KVM_APIC_INIT = 0
KVM_APIC_SIPI = 1

# Delivery modes of the LAPIC's ICR (apicdef.h), those the port handles.
APIC_DM_FIXED = 0x000
APIC_DM_INIT = 0x500

# ------------------------------------------------------ KVM_EXIT_* reasons --
KVM_EXIT_UNKNOWN = 0
KVM_EXIT_EXCEPTION = 1
KVM_EXIT_DEBUG = 4
KVM_EXIT_HLT = 5
KVM_EXIT_SHUTDOWN = 8
KVM_EXIT_FAIL_ENTRY = 9
KVM_EXIT_INTR = 10
KVM_EXIT_INTERNAL_ERROR = 17

KVM_INTERNAL_ERROR_EMULATION = 1
KVM_INTERNAL_ERROR_SIMUL_EX = 2
KVM_INTERNAL_ERROR_DELIVERY_EV = 3

EXIT_NAMES = {KVM_EXIT_EXCEPTION: "KVM_EXIT_EXCEPTION", KVM_EXIT_DEBUG: "KVM_EXIT_DEBUG",
              KVM_EXIT_SHUTDOWN: "KVM_EXIT_SHUTDOWN", KVM_EXIT_FAIL_ENTRY: "KVM_EXIT_FAIL_ENTRY",
              KVM_EXIT_INTR: "KVM_EXIT_INTR", KVM_EXIT_INTERNAL_ERROR: "KVM_EXIT_INTERNAL_ERROR"}

# ------------------------------------------ struct kvm_vcpu_events flags --
KVM_VCPUEVENT_VALID_NMI_PENDING = 0x1
KVM_VCPUEVENT_VALID_SIPI_VECTOR = 0x2
KVM_VCPUEVENT_VALID_SHADOW = 0x4
KVM_VCPUEVENT_VALID_SMM = 0x8
KVM_VCPUEVENT_VALID_PAYLOAD = 0x10

KVM_X86_SHADOW_INT_MOV_SS = 0x1
KVM_X86_SHADOW_INT_STI = 0x2

# Guest interruptibility bits (VMX) as KVM names them.
GUEST_INTR_STATE_STI = 1
GUEST_INTR_STATE_MOV_SS = 2
GUEST_INTR_STATE_NMI = 8

# Exception-class / exception-type values (x86.c).
EXCPT_BENIGN, EXCPT_CONTRIBUTORY, EXCPT_PF = 0, 1, 2
EXCPT_FAULT, EXCPT_TRAP, EXCPT_ABORT, EXCPT_INTERRUPT = 0, 1, 2, 3

DR6_RTM = 1 << 16
DR6_FIXED_1 = 0xFFFE0FF0
DR6_INIT = 0xFFFF0FF0
DR7_FIXED_1 = 0x400
DR7_GD = 1 << 13
PFERR_PRESENT_MASK = 1
PFERR_RSVD_MASK = 1 << 3


class KvmQueuedException:
    """vcpu->arch.exception (struct kvm_queued_exception)."""

    __slots__ = ("pending", "injected", "has_error_code", "nr", "error_code", "payload", "has_payload",
                 "nested_apf")

    def __init__(self):
        self.pending = self.injected = self.has_error_code = False
        self.nr = 0
        self.error_code = 0
        self.payload = 0
        self.has_payload = False
        self.nested_apf = False


class KvmQueuedInterrupt:
    """vcpu->arch.interrupt (struct kvm_queued_interrupt)."""

    __slots__ = ("injected", "soft", "nr")

    def __init__(self):
        self.injected = self.soft = False
        self.nr = 0


class X86Exception:
    """struct x86_exception: a fault the MMU or emulator reports."""

    __slots__ = ("vector", "error_code_valid", "error_code", "nested_page_fault", "address",
                 "async_page_fault")

    def __init__(self, vector, error_code_valid, error_code, address=0, nested_page_fault=False):
        self.vector = vector
        self.error_code_valid = error_code_valid
        self.error_code = error_code
        self.nested_page_fault = nested_page_fault
        self.address = address
        self.async_page_fault = False


class KvmVcpuArch:
    """The part of struct kvm_vcpu_arch the event paths use."""

    __slots__ = ("exception", "interrupt", "nmi_pending", "nmi_queued", "nmi_injected", "smi_pending",
                 "hflags", "dr6", "dr7", "event_exit_inst_len", "apf_host_apf_flags",
                 "apf_nested_apf_token", "exit_qualification", "mp_state")

    def __init__(self):
        self.exception = KvmQueuedException()
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
        self.apf_nested_apf_token = 0
        self.exit_qualification = 0
        # kvm_arch_vcpu_create: the reset BSP (vcpu_id 0, the only vCPU) starts
        # RUNNABLE, the others UNINITIALIZED.
        self.mp_state = KVM_MP_STATE_RUNNABLE


class KvmRun:
    """struct kvm_run, the fields written on an exit to userspace."""

    __slots__ = ("exit_reason", "suberror", "data")

    def __init__(self):
        self.exit_reason = KVM_EXIT_UNKNOWN
        self.suberror = 0
        self.data: tuple = ()


class KvmLapic:
    """The in-kernel LAPIC, reduced to its IRR and the INIT/SIPI latch
    `pending_events` (bits KVM_APIC_INIT, KVM_APIC_SIPI) with `sipi_vector`
    (see impls.hw.environment)."""

    __slots__ = ("irr", "pending_events", "sipi_vector")

    def __init__(self):
        self.irr: set[int] = set()
        self.pending_events = 0
        self.sipi_vector = 0


# ------------------------------------------------------------- uapi struct --


class KvmVcpuEvents:
    """struct kvm_vcpu_events, flattened: `exception_*`, `interrupt_*`,
    `nmi_*`, `smi_*` are the members of its sub-structures."""

    __slots__ = ("exception_injected", "exception_nr", "exception_has_error_code", "exception_pending",
                 "exception_error_code", "interrupt_injected", "interrupt_nr", "interrupt_soft",
                 "interrupt_shadow", "nmi_injected", "nmi_pending", "nmi_masked", "sipi_vector", "flags",
                 "smi_smm", "smi_pending", "smi_smm_inside_nmi", "smi_latched_init",
                 "exception_has_payload", "exception_payload")

    def __init__(self):
        for f in self.__slots__:
            setattr(self, f, 0)


# ---------------------------------------------------------- vendor state --


class Vmcs12:
    """The vmcs12 fields L1 and KVM's nested code use (vmcs12.h)."""

    __slots__ = ("exception_bitmap", "page_fault_error_code_mask", "page_fault_error_code_match",
                 "pin_based_vm_exec_control", "cpu_based_vm_exec_control",
                 "vm_entry_intr_info_field", "vm_entry_exception_error_code", "vm_entry_instruction_len",
                 "vm_exit_reason", "vm_exit_intr_info", "vm_exit_intr_error_code",
                 "idt_vectoring_info_field", "idt_vectoring_error_code", "exit_qualification",
                 "vm_exit_instruction_len", "launch_state", "vm_exit_controls", "guest_activity_state")

    def __init__(self):
        for f in self.__slots__:
            setattr(self, f, 0)


PIN_BASED_EXT_INTR_MASK = 1 << 0
PIN_BASED_NMI_EXITING = 1 << 3
PIN_BASED_VIRTUAL_NMIS = 1 << 5
CPU_BASED_INTR_WINDOW_EXITING = 1 << 2
CPU_BASED_HLT_EXITING = 1 << 7
CPU_BASED_NMI_WINDOW_EXITING = 1 << 22
CPU_BASED_MONITOR_TRAP_FLAG = 1 << 27
VM_EXIT_ACK_INTR_ON_EXIT = 1 << 15
#: vmcs12's guest activity state (vmx.h GUEST_ACTIVITY_*).
GUEST_ACTIVITY_ACTIVE = 0
GUEST_ACTIVITY_HLT = 1
GUEST_ACTIVITY_WAIT_SIPI = 3


class NestedVmx:
    __slots__ = ("vmxon", "nested_run_pending", "vmcs12", "mtf_pending", "preemption_timer_expired",
                 "smm_guest_mode", "smm_vmxon")

    def __init__(self):
        self.vmxon = True  # L1 has executed VMXON (L1 is a hypervisor)
        self.nested_run_pending = False
        self.vmcs12 = Vmcs12()
        self.mtf_pending = False
        self.preemption_timer_expired = False
        # vmx->nested.smm: what vmx_pre_enter_smm saved for vmx_pre_leave_smm.
        self.smm_guest_mode = False
        self.smm_vmxon = False


class LoadedVmcs:
    """struct loaded_vmcs: a hardware VMCS and KVM's per-VMCS NMI cache."""

    __slots__ = ("vmcs", "nmi_known_unmasked", "soft_vnmi_blocked")

    def __init__(self, vmcs: Vmcs):
        self.vmcs = vmcs
        self.nmi_known_unmasked = False
        self.soft_vnmi_blocked = False


class VcpuVmx:
    """struct vcpu_vmx, event part."""

    __slots__ = ("vmcs01", "vmcs02", "loaded_vmcs", "idt_vectoring_info", "exit_reason", "fail",
                 "req_immediate_exit", "nested", "emulation_required")

    def __init__(self):
        self.vmcs01 = LoadedVmcs(Vmcs("vmcs01", 1))
        self.vmcs02 = LoadedVmcs(Vmcs("vmcs02", 2))
        self.loaded_vmcs = self.vmcs01
        self.idt_vectoring_info = 0
        self.exit_reason = 0
        self.fail = False
        self.req_immediate_exit = False
        self.nested = NestedVmx()
        self.emulation_required = False


class Vmcb12:
    """L1's VMCB for L2 (control area; L2's save area lives in the CPU)."""

    __slots__ = ("control",)

    def __init__(self):
        self.control = Vmcb(level=2)


class NestedSvm:
    __slots__ = ("hsave", "ctl", "vmcb12", "vmcb12_gpa", "nested_run_pending", "hsave_rflags_if")

    def __init__(self):
        self.hsave = Vmcb(level=1)  # L1's control area while L2 runs
        self.ctl = Vmcb(level=2)  # cached vmcb12 control (svm->nested.ctl)
        self.vmcb12 = Vmcb12()  # L1's VMCB in its memory
        self.vmcb12_gpa = 0
        self.nested_run_pending = False
        self.hsave_rflags_if = False


class VcpuSvm:
    """struct vcpu_svm, event part (single-VMCB design of 5.11)."""

    __slots__ = ("vmcb", "nested", "nmi_iret_rip", "nmi_singlestep", "nmi_singlestep_guest_rflags_tf",
                 "int3_injected", "next_rip")

    def __init__(self):
        self.vmcb = Vmcb(level=1)
        self.nested = NestedSvm()
        self.nmi_iret_rip = -1
        self.nmi_singlestep = False
        self.nmi_singlestep_guest_rflags_tf = False
        self.int3_injected = 0
        self.next_rip = 0
