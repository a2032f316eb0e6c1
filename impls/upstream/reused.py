"""The 5.11 functions the 6.1 port runs unchanged, each with where its 6.1
version was read and what differs there, if anything, that the port does
not model.

The 6.1 port (`impls.upstream`) overrides every function 6.1 changed in
what the event paths do; it inherits the rest from the 5.11 port
(`impls.prepatch`).  Each inherited function is listed here, as
`Upstream.takes_over`, after re-reading it in 6.1 (issue 13): the fidelity
test (tests/test_fidelity.py) fails on an inherited function missing from
this list, and on a name here the port no longer inherits.

`S` is 6.1.55 (impls.upstream.state.STABLE: no stable backport touches
these functions); x86.c functions were also read at 26844fee
(`impls.upstream.state.MERGE_WINDOW`), the same.
"""
from __future__ import annotations

from impls.upstream.state import MERGE_WINDOW, STABLE

S = STABLE
SX = f"{MERGE_WINDOW}; {STABLE}"

_X86 = {
    "exception_class": SX,
    "kvm_exception_is_soft": f"{S} (x86.h)",
    "emulator_get_hflags": SX,
    "emulator_set_nmi_mask": SX,
    "enter_smm_save_state_64": f"{SX}: still no interrupt shadow in SMRAM (6.2 adds it)",
    "handle_emulation_failure": f"{SX}: 6.1 adds the VMware-#GP and EMULTYPE_SKIP cases and "
                                "KVM_CAP_EXIT_ON_EMULATION_FAILURE, none of which arise here",
    "kvm_inject_nmi": SX,
    "kvm_queue_exception": SX,
    "kvm_queue_exception_e": SX,
    "kvm_queue_exception_e_p": SX,
    "kvm_queue_exception_p": SX,
    "kvm_requeue_exception": SX,
    "kvm_requeue_exception_e": SX,
    "kvm_skip_emulated_instruction": SX,
    "kvm_vcpu_ioctl_interrupt": SX,
    "kvm_vcpu_ioctl_nmi": SX,
    "kvm_vcpu_ioctl_smi": SX,
    "kvm_vcpu_is_bsp": SX,
    "process_nmi": SX,
    "process_smi": SX,
    "toggle_interruptibility": SX,
    "vcpu_run_once": f"{SX}: vcpu_run's loop: vcpu_enter_guest while running, else vcpu_block",
    "kvm_arch_vcpu_runnable": f"{S}",
    "kvm_arch_interrupt_allowed": f"{S}",
    "kvm_vcpu_block": f"{S} (kvm_main.c): sleeps until kvm_arch_vcpu_runnable (the scenario's next event)",
    "kvm_run_immediate_exit": f"{SX}: kvm_arch_vcpu_ioctl_run's immediate_exit check, after the "
                              "morph of a userspace exception into a nested VM exit "
                              "(impls.upstream.x86.kvm_arch_vcpu_ioctl_run, which the driver runs first)",
    "xfer_to_guest_mode_handle_work": f"{S} (kernel/entry/kvm.c): a pending signal is -EINTR with "
                                      "KVM_EXIT_INTR, as in 5.11",
    "kvm_handle_signal_exit": f"{S} (include/linux/kvm_host.h)",
    "x86_emulate_rsm": f"{SX}: the writeback after em_rsm, as in 5.11 (6.1's em_rsm ends with "
                       "emulator_recalc_and_set_mode, which the port does not model)",
    "is_protmode": f"{S} (x86.h)",
    "kvm_clear_interrupt_queue": f"{S} (x86.h)",
    "kvm_event_needs_reinjection": f"{S} (x86.h)",
    "kvm_queue_interrupt": f"{S} (x86.h)",
    "kvm_check_request": f"{S} (include/linux/kvm_host.h)",
    "kvm_make_request": f"{S} (include/linux/kvm_host.h)",
    "kvm_test_request": f"{S} (include/linux/kvm_host.h)",
    "enter_guest_mode": f"{S} (kvm_cache_regs.h)",
    "leave_guest_mode": f"{S} (kvm_cache_regs.h)",
    "is_guest_mode": f"{S} (kvm_cache_regs.h)",
    "is_smm": f"{S} (kvm_cache_regs.h)",
    "kvm_cpu_get_interrupt": f"{S} (irq.c)",
    "kvm_cpu_has_extint": f"{S} (irq.c): split irqchip, the LVT0 of the reset BSP accepting ExtINT",
    "kvm_cpu_has_injectable_intr": f"{S} (irq.c): 6.1's APICv test is moot (no APICv)",
    "kvm_cpu_has_interrupt": f"{S} (irq.c)",
    "_apic_accept_irq": f"{S} (lapic.c): the INIT case",
    "kvm_apic_set_irq": f"{S} (lapic.c)",
    "kvm_lapic_latched_init": f"{S} (lapic.h)",
    "kvm_handle_page_fault": f"{S} (mmu/mmu.c)",
    "kvm_mmu_page_fault": f"{S} (mmu/mmu.c): the verdict is the scenario's (impls.hw.environment)",
    "rsm_load_state_64": f"{S} (emulate.c): the RFLAGS part",
}

_SVM = {
    "ac_interception": S,
    "clgi_interception": S,
    "db_interception": f"{S}: the payload is now computed from DR6 ^ DR6_ACTIVE_LOW; it only reaches DR6, "
                       "which nothing observes",
    "disable_nmi_singlestep": S,
    "init_vmcb": f"{S}: L0's intercepts and GIF, as in 5.11 (host features as in impls.prepatch.svm)",
    "interrupt_window_interception": S,
    "intr_interception": S,
    "iret_interception": S,
    "mc_interception": S,
    "nmi_interception": S,
    "npf_interception": S,
    "pf_interception": S,
    "rsm_interception": S,
    "shutdown_interception": f"{S}: 6.1 calls kvm_vcpu_reset(init_event) where 5.11 re-ran init_vmcb; "
                             "KVM_EXIT_SHUTDOWN either way, and nothing after a shutdown is followed",
    "stgi_interception": S,
    "svm_cancel_injection": S,
    "svm_enable_irq_window": f"{S}: no vGIF, no AVIC inhibit",
    "svm_enable_nmi_window": f"{S}: no vGIF; RF not modelled",
    "svm_enable_smi_window": f"{S}: no vGIF",
    "svm_get_if": S,
    "svm_get_interrupt_shadow": S,
    "svm_get_nmi_mask": S,
    "svm_handle_exit": f"{S}: 6.1 adds the exit fastpath (none here) and svm_invoke_exit_handler",
    "halt_interception": f"{S}: gone from 6.1's svm.c, whose svm_exit_handlers calls kvm_emulate_halt for "
                         "SVM_EXIT_HLT directly; the 5.11 wrapper does only that call (of 6.1's "
                         "kvm_emulate_halt)",
    "svm_interrupt_blocked": S,
    "svm_nmi_blocked": S,
    "svm_request_immediate_exit": f"{S} (__kvm_request_immediate_exit)",
    "svm_set_interrupt_shadow": S,
    "svm_set_nmi_mask": S,
    "svm_set_vintr": S,
    "svm_smi_blocked": S,
    "svm_vcpu_run": f"{S}: svm_handle_mce still runs before svm_complete_interrupts; the port queues "
                    "the VMM's #MC after it (impls.hw.environment)",
    "sync_nested_vmcb_control": f"{S} (6.1: nested_sync_control_from_vmcb02)",
    "ud_interception": S,
    "vmrun_interception": S,
    "get_host_vmcb": f"{S} (svm.h; 6.1 reads vmcb01, the same fields here)",
    "gif_set": f"{S} (svm.h)",
    "svm_clr_intercept": f"{S} (svm.h)",
    "svm_is_intercept": f"{S} (svm.h)",
    "svm_nested_exit_on_intr": f"{S} (svm.h)",
    "svm_nested_exit_on_nmi": f"{S} (svm.h)",
    "svm_nested_exit_on_smi": f"{S} (svm.h)",
    "svm_set_intercept": f"{S} (svm.h)",
    "nested_exit_on_init": f"{S} (svm.h)",
    "nested_prepare_vmcb_save": f"{S} (6.1: nested_vmcb02_prepare_save, kvm_set_rflags makes KVM_REQ_EVENT)",
    "nested_svm_exit_handled": f"{S} (svm/nested.c)",
    "nested_svm_exit_special": f"{S} (svm/nested.c)",
    "nested_svm_intercept": f"{S} (svm/nested.c)",
    "nested_vmcb_checks": f"{S} (6.1: nested_vmcb_check_controls; no EVENTINJ check)",
    "recalc_intercepts": f"{S} (svm/nested.c)",
}

_VMX = {
    "nested_cpu_has_zero_length_injection": f"{S} (vmx/nested.h): KVM's IA32_VMX_MISC for L1 still lacks bit 30",
    "is_exception_n": f"{S} (vmx/vmcs.h)",
    "_vmx_complete_interrupts": f"{S}: saves the instruction length of soft events, as 5.11 does",
    "nested_check_vm_entry_controls": f"{S} (vmx/nested.c): error-code bits 31:16 rejected, as in 5.11 "
                                      "(567926cca99b, 5.4)",
    "nested_cpu_supports_monitor_trap_flag": f"{S} (vmx/nested.h)",
    "nested_vmx_exit_handled_mtf": f"{S} (vmx/nested.c)",
    "nested_check_vm_execution_controls": f"{S} (vmx/nested.c): only the NMI checks can fail here",
    "nested_vmx_check_controls": f"{S} (vmx/nested.c): 6.1 checks eVMCS controls after, not used here",
    "nested_vmx_check_nmi_controls": f"{S} (vmx/nested.c)",
    "handle_ept_misconfig": S,
    "handle_ept_violation": S,
    "handle_exception_nmi": f"{S}: 6.1 adds #NM (XFD) and the VMware #GP path, neither intercepted here; "
                            "a #PF exit with EPT on still never reaches it",
    "handle_external_interrupt": S,
    "handle_interrupt_window": S,
    "handle_nmi_window": S,
    "handle_preemption_timer": S,
    "handle_triple_fault": S,
    "handle_ud": S,
    "handle_vmlaunch": S,
    "handle_vmresume": S,
    "update_exception_bitmap": f"{S} (vmx_update_exception_bitmap)",
    "vmx_apic_init_signal_blocked": S,
    "vmx_cancel_injection": S,
    "vmx_complete_interrupts": S,
    "vmx_enable_irq_window": S,
    "vmx_enable_nmi_window": S,
    "vmx_enable_smi_window": S,
    "vmx_get_if": f"{S} (vmx_get_rflags)",
    "vmx_get_interrupt_shadow": S,
    "vmx_get_nmi_mask": S,
    "vmx_handle_exit": f"{S} (__vmx_handle_exit): emulation_required never holds here",
    "vmx_handle_exit_irqoff": f"{S}: the host handles the #MC (kvm_machine_check); the port queues the "
                              "VMM's #MC (impls.hw.environment)",
    "vmx_inject_nmi": S,
    "vmx_interrupt_allowed": S,
    "vmx_interrupt_blocked": S,
    "vmx_nmi_allowed": S,
    "vmx_nmi_blocked": S,
    "vmx_recover_nmi_blocking": S,
    "vmx_request_immediate_exit": S,
    "vmx_set_interrupt_shadow": S,
    "vmx_set_nmi_mask": S,
    "vmx_skip_emulated_instruction": S,
    "vmx_smi_allowed": S,
    "vmx_vcpu_reset": S,
    "vmx_vcpu_run": f"{S}: recover_nmi_blocking, complete_interrupts, handle_exit_irqoff in 5.11's order",
    "vmx_need_pf_intercept": f"{S} (vmx.h)",
    "load_vmcs12_host_state": f"{S} (vmx/nested.c)",
    "nested_vmx_fail": f"{S} (vmx/nested.c)",
    "nested_vmx_failValid": f"{S} (vmx/nested.c)",
    "nested_vmx_is_page_fault_vmexit": f"{S} (vmx/nested.c)",
    "nested_vmx_l0_wants_exit": f"{S} (vmx/nested.c)",
    "nested_vmx_l1_wants_exit": f"{S} (vmx/nested.c)",
    "nested_vmx_preemption_timer_pending": f"{S} (vmx/nested.c)",
    "nested_vmx_reflect_vmexit": f"{S} (vmx/nested.c)",
    "sync_vmcs02_to_vmcs12": f"{S} (vmx/nested.c): the activity state from mp_state",
    "prepare_vmcs02_early": f"{S} (vmx/nested.c)",
    "nested_exit_on_intr": f"{S} (vmx/nested.h)",
    "nested_exit_on_nmi": f"{S} (vmx/nested.h)",
}

#: name -> where its 6.1 version was read, and what differs there unmodelled.
REUSED_FROM_511: dict[str, str] = {**_X86, **_SVM, **_VMX}
