"""The functions the 6.18 port runs from the older ports, each with where its
6.18 version was read and what differs there, if anything, that the port
does not model.

The 6.18 port (`impls.current`) overrides every function 6.18 changed in
what the event paths do; it inherits the rest from the 6.1 port
(`impls.upstream`) and, through it, from the 5.11 port (`impls.prepatch`).
Each inherited function is listed here, as `Current.takes_over`, by the
tree its port follows: `REUSED_FROM_61` for functions of the 6.1 port,
`REUSED_FROM_511` for the 5.11 functions the 6.1 port already reused
(impls.upstream.reused says where their 6.1 version was read).  The
fidelity test (tests/test_fidelity.py) fails on an inherited function
missing from these lists, and on a name here the port no longer inherits.

`R` is the v6.18 release (`impls.current.state.RELEASE`).  Every function
was extracted there and in 6.1.55 (impls.upstream.state.STABLE) and the two
compared with comments and whitespace ignored; where they differ the entry
says how (docs/kernel/current.md walks through the same diff).  An entry
without a note is the same code, or differs only in how a kvm_x86_ops hook
is called (kvm_x86_call for static_call).

`nested_vmx_inject_exception_vmexit` is not here: 6.18 carries 80962ec912db,
which the 6.1 port (the v6.1 tag) lacks, so impls.current.vmx_nested ports it.
"""
from __future__ import annotations

from impls.current.state import RELEASE

R = RELEASE

# ------------------------------------------------ functions of the 6.1 port --

_X86_61 = {
    "exception_type": R,
    "inject_emulated_exception": R,
    "kvm_deliver_exception_payload": R,
    "kvm_inject_page_fault": R,
    "kvm_queue_exception_vmexit": R,
    "kvm_clear_exception_queue": f"{R} (x86.h)",
    "kvm_is_exception_pending": f"{R} (x86.h)",
    "kvm_clear_request": f"{R} (include/linux/kvm_host.h)",
    "kvm_arch_vcpu_ioctl_run": f"{R}: the KVM_RUN morph of an exception from userspace is the same; "
                               "immediate_exit is read as wants_to_run, the MMU's post-init and the "
                               "sync-regs fields are new, none modelled",
    "kvm_inject_emulated_page_fault": f"{R}: the TLB flush renamed (kvm_mmu_invalidate_addr)",
    "kvm_vcpu_reset": f"{R}: the xstate, PAT and PMU resets moved; the port stops at the reset",
    "x86_emulate_instruction": f"{R}: the new pre-checks (kvm_check_emulate_insn), unprotect-and-retry, "
                               "L1's intercepts checked when emulating for L2, and a vectoring exit for MMIO "
                               "during event delivery; none applies to what the scenario has L0 emulate",
    "kvm_apic_accept_events": f"{R} (lapic.c): mp_state set through kvm_set_mp_state, which also clears "
                              "pv_unhalted (not modelled)",
    "kvm_apic_has_pending_init_or_sipi": f"{R} (lapic.h)",
    "kvm_apic_init_sipi_allowed": f"{R} (lapic.h)",
    "kvm_emulate_halt": R,
    "kvm_emulate_halt_noskip": R,
    "kvm_vcpu_halt": f"{R} (kvm_main.c): halt-polling, then kvm_vcpu_block",
}

_SVM_61 = {
    "svm_clear_vintr": R,
    "svm_apic_init_signal_blocked": R,
    "svm_complete_soft_interrupt": R,
    "svm_get_rflags_tf": f"{R} (svm_get_rflags)",
    "svm_inject_exception": R,
    "svm_inject_irq": R,
    "svm_inject_nmi": f"{R}: with vNMI off it sets svm->nmi_masked and the IRET intercept, which the "
                      "port keeps as HF_NMI_MASK (impls.current.state)",
    "svm_interrupt_allowed": R,
    "svm_nmi_allowed": R,
    "svm_set_gif": R,
    "svm_smi_allowed": R,
    "svm_update_soft_interrupt_rip": R,
    "_svm_skip_emulated_instruction": f"{R} (__svm_skip_emulated_instruction): the decode path lost its "
                                      "can-emulate check (SEV only: always true here)",
    "svm_skip_emulated_instruction": R,
    "svm_enter_smm": f"{R}: SMRAM is a union; it refuses without long mode in CPUID, which the guest has",
    "svm_leave_smm": f"{R}: SMRAM is a union",
    "nested_svm_simple_vmexit": f"{R} (svm.h)",
    "enter_svm_guest_mode": f"{R} (svm/nested.c): Hyper-V's VP ids added",
    "nested_save_pending_event_to_vmcb12": f"{R} (svm/nested.c)",
    "nested_svm_inject_exception_vmexit": f"{R} (svm/nested.c)",
    "nested_svm_is_exception_vmexit": f"{R} (svm/nested.c)",
    "nested_svm_vmrun": f"{R} (svm/nested.c): Hyper-V's VP-assist check; the MSR-bitmap merge renamed",
    "nested_vmcb02_prepare_control": f"{R} (svm/nested.c): enter_guest_mode comes first (nothing between "
                                     "reads it for the fields modelled); a pending vNMI (off), the bus-lock "
                                     "counter and guest capabilities through guest_cpu_cap_has",
    "svm_check_nested_events": f"{R} (svm/nested.c): the SMI rung under CONFIG_KVM_SMM",
}

_VMX_61 = {
    "vmx_inject_exception": f"{R}: emulation_required moved into struct vcpu_vt",
    "vmx_inject_irq": R,
    "vmx_enter_smm": f"{R}: SMRAM is a union",
    "vmx_leave_smm": f"{R}: SMRAM is a union",
    "nested_vmx_is_exception_vmexit": f"{R} (vmx/nested.c)",
    "nested_vmx_update_pending_dbg": f"{R} (vmx/nested.c)",
    "vmcs12_save_pending_event": f"{R} (vmx/nested.c)",
    "vmx_get_pending_dbg_trap": f"{R} (vmx/nested.c)",
    "vmx_is_low_priority_db_trap": f"{R} (vmx/nested.c)",
    "prepare_vmcs02": f"{R} (vmx/nested.c): CET state and DEBUGCTL, not modelled",
    "prepare_vmcs12": f"{R} (vmx/nested.c): takes the exit instruction length from its caller, not modelled",
    "nested_vmx_run": f"{R} (vmx/nested.c): the event-relevant checks, in 5.11's order, and the HLT "
                      "activity state halting through kvm_emulate_halt_noskip; posted-interrupt "
                      "processing moved out (no posted interrupts); the wait-for-SIPI state set through "
                      "kvm_set_mp_state",
}

# ------------------------------- 5.11 functions the 6.1 port already reused --

_X86_511 = {
    "exception_class": R,
    "kvm_exception_is_soft": f"{R} (x86.h)",
    "emulator_set_nmi_mask": R,
    "handle_emulation_failure": f"{R}: the VMware-#GP and EMULTYPE_SKIP cases and "
                                "KVM_CAP_EXIT_ON_EMULATION_FAILURE (6.1) do not arise here",
    "kvm_inject_nmi": R,
    "kvm_skip_emulated_instruction": f"{R}: the PMU's instruction event renamed (no PMU here)",
    "kvm_vcpu_ioctl_interrupt": R,
    "kvm_vcpu_ioctl_nmi": R,
    "kvm_vcpu_ioctl_smi": f"{R}: KVM_SMI calls kvm_inject_smi (smm.h), the same KVM_REQ_SMI but -ENOTTY "
                          "where the vendor cannot emulate SMBASE; both can here",
    "kvm_vcpu_is_bsp": R,
    "toggle_interruptibility": R,
    "vcpu_run_once": f"{R}: vcpu_run's loop: vcpu_enter_guest while running, else vcpu_block; "
                     "run->exit_reason is preset to KVM_EXIT_UNKNOWN, as the shared driver resets it after "
                     "each exit",
    "kvm_arch_vcpu_runnable": f"{R}: pv_unhalted is tested here now (no PV unhalt here)",
    "kvm_arch_interrupt_allowed": R,
    "kvm_vcpu_block": f"{R} (kvm_main.c): sleeps until kvm_arch_vcpu_runnable (the scenario's next event)",
    "kvm_run_immediate_exit": f"{R}: kvm_arch_vcpu_ioctl_run tests !vcpu->wants_to_run, which "
                              "kvm_vcpu_ioctl sets from !kvm_run->immediate_exit; still after the morph",
    "xfer_to_guest_mode_handle_work": f"{R}: vcpu_run now calls kvm_xfer_to_guest_mode_handle_work "
                                      "(include/linux/kvm_host.h), which runs the generic "
                                      "xfer_to_guest_mode_handle_work and on -EINTR kvm_handle_signal_exit: "
                                      "for a signal the same -EINTR with KVM_EXIT_INTR",
    "kvm_handle_signal_exit": f"{R} (include/linux/kvm_host.h)",
    "x86_emulate_rsm": f"{R}: x86_emulate_instruction's path for RSM, whose em_rsm is 6.18's "
                       "(impls.current.smm); the new pre-checks and retries do not act on RSM, and RSM "
                       "runs outside guest mode (SMM left it), so L1's intercepts are not checked",
    "is_protmode": f"{R} (x86.h: kvm_is_cr0_bit_set)",
    "kvm_clear_interrupt_queue": f"{R} (x86.h)",
    "kvm_event_needs_reinjection": f"{R} (x86.h)",
    "kvm_queue_interrupt": f"{R} (x86.h)",
    "kvm_check_request": f"{R} (include/linux/kvm_host.h)",
    "kvm_make_request": f"{R} (include/linux/kvm_host.h)",
    "kvm_test_request": f"{R} (include/linux/kvm_host.h)",
    "enter_guest_mode": f"{R} (kvm_cache_regs.h)",
    "leave_guest_mode": f"{R} (kvm_cache_regs.h)",
    "is_guest_mode": f"{R} (kvm_cache_regs.h)",
    "is_smm": f"{R} (smm.h, moved from kvm_cache_regs.h)",
    "kvm_cpu_get_interrupt": f"{R} (irq.c): the LAPIC's vector is found (kvm_apic_has_interrupt) and "
                             "acknowledged (kvm_apic_ack_interrupt) in two steps, as "
                             "kvm_get_apic_interrupt did",
    "kvm_cpu_has_extint": f"{R} (irq.c): split irqchip, the LVT0 of the reset BSP accepting ExtINT; "
                          "the in-kernel PIC test comes first, under CONFIG_KVM_IOAPIC",
    "kvm_cpu_has_injectable_intr": f"{R} (irq.c): the APICv test is moot (no APICv)",
    "kvm_cpu_has_interrupt": f"{R} (irq.c): the protected-APIC (TDX) branch does not apply",
    "_apic_accept_irq": f"{R} (lapic.c): the INIT case; an SMI IPI now goes through kvm_inject_smi",
    "kvm_apic_set_irq": f"{R} (lapic.c)",
    "kvm_lapic_latched_init": f"{R} (lapic.h)",
    "kvm_handle_page_fault": f"{R} (mmu/mmu.c): no longer unprotects the page when an event needs "
                             "re-injection, WARNs on error-code bits 63:32; neither modelled",
    "kvm_mmu_page_fault": f"{R} (mmu/mmu.c): the verdict is the scenario's (impls.hw.environment); "
                          "private memory, write protection and the retry logic are the MMU's",
}

_SVM_511 = {
    "ac_interception": R,
    "clgi_interception": R,
    "db_interception": f"{R}: the payload is computed from DR6 ^ DR6_ACTIVE_LOW (as in 6.1); it only "
                       "reaches DR6, which nothing observes",
    "disable_nmi_singlestep": R,
    "init_vmcb": f"{R}: L0's intercepts and GIF, as in 5.11 (host features as in impls.prepatch.svm); "
                 "the vNMI enable bit (off), IDLE_HLT, bus-lock and SEV changes are not modelled",
    "interrupt_window_interception": R,
    "intr_interception": R,
    "iret_interception": f"{R}: sets awaiting_iret_completion, the port's HF_IRET_MASK "
                         "(impls.current.state); the SEV-ES test is a WARN",
    "mc_interception": R,
    "nmi_interception": R,
    "npf_interception": f"{R}: KVM's synthetic error-code bits and SNP added; the verdict is the scenario's",
    "pf_interception": R,
    "rsm_interception": R,
    "shutdown_interception": f"{R}: leaves SMM, then kvm_vcpu_reset(init_event); KVM_EXIT_SHUTDOWN either "
                             "way, and nothing after a shutdown is followed",
    "stgi_interception": R,
    "svm_cancel_injection": R,
    "svm_enable_irq_window": f"{R}: no vGIF, no AVIC inhibit",
    "svm_enable_nmi_window": f"{R}: tests svm_get_nmi_mask and awaiting_iret_completion for 6.1's "
                             "HF_NMI_MASK / HF_IRET_MASK, the same with vNMI off; no vGIF; RF not modelled",
    "svm_enable_smi_window": f"{R}: no vGIF",
    "svm_get_if": f"{R} (svm_get_rflags)",
    "svm_get_interrupt_shadow": R,
    "svm_get_nmi_mask": f"{R}: svm->nmi_masked with vNMI off, the port's HF_NMI_MASK",
    "svm_handle_exit": f"{R}: the exit fastpath (none here) and svm_invoke_exit_handler, as in 6.1; the "
                       "exit tracepoint moved to svm_vcpu_run",
    "halt_interception": f"{R}: gone, as in 6.1: svm_exit_handlers calls kvm_emulate_halt for SVM_EXIT_HLT "
                         "(and SVM_EXIT_IDLE_HLT) directly; the 5.11 wrapper does only that call",
    "svm_interrupt_blocked": R,
    "svm_nmi_blocked": f"{R}: the NMI mask (svm_get_nmi_mask) tested before the shadow, the same result",
    "svm_request_immediate_exit": f"{R}: no such hook: vcpu_enter_guest passes "
                                  "KVM_RUN_FORCE_IMMEDIATE_EXIT to svm_vcpu_run, which sends the same "
                                  "self-IPI (smp_send_reschedule) before VMRUN",
    "svm_set_interrupt_shadow": R,
    "svm_set_nmi_mask": f"{R}: svm->nmi_masked and the IRET intercept with vNMI off, the port's HF_NMI_MASK",
    "svm_smi_blocked": R,
    "svm_vcpu_run": f"{R}: svm_handle_mce still runs before svm_complete_interrupts; the port queues the "
                    "VMM's #MC after it (impls.hw.environment); the immediate exit is a run flag (see "
                    "svm_request_immediate_exit); DEBUGCTL, DR6 and the fastpath are not modelled",
    "ud_interception": R,
    "vmrun_interception": R,
    "get_host_vmcb": f"{R} (svm.h; 6.18 reads vmcb01, as 6.1: the same fields here)",
    "gif_set": f"{R} (svm.h): svm->guest_gif without vGIF, the port's HF_GIF_MASK",
    "svm_clr_intercept": f"{R} (svm.h)",
    "svm_is_intercept": f"{R} (svm.h)",
    "svm_nested_exit_on_intr": f"{R} (svm.h)",
    "svm_nested_exit_on_nmi": f"{R} (svm.h)",
    "svm_nested_exit_on_smi": f"{R} (svm.h)",
    "svm_set_intercept": f"{R} (svm.h)",
    "nested_exit_on_init": f"{R} (svm/nested.c)",
    "nested_prepare_vmcb_save": f"{R} (nested_vmcb02_prepare_save: kvm_set_rflags makes KVM_REQ_EVENT); "
                                "CET state and LBRs not modelled",
    "nested_svm_exit_handled": f"{R} (svm/nested.c)",
    "nested_svm_exit_special": f"{R} (svm/nested.c): Hyper-V's L2 TLB-flush VMMCALL stays in L0, not "
                               "reached here",
    "nested_svm_intercept": f"{R} (svm/nested.c)",
    "nested_vmcb_checks": f"{R} (__nested_vmcb_check_controls; no EVENTINJ check): the TLB_CONTROL "
                          "check is gone and V_NMI_ENABLE needs the NMI intercept; L1 sets neither here",
}

_VMX_511 = {
    "nested_cpu_has_zero_length_injection": f"{R} (vmx/nested.h): KVM's IA32_VMX_MISC for L1 still lacks bit 30",
    "nested_check_vm_execution_controls": f"{R} (vmx/nested.c): only the NMI checks can fail here",
    "nested_vmx_check_controls": f"{R} (vmx/nested.c): eVMCS controls checked after under CONFIG_KVM_HYPERV, "
                                 "not used here",
    "nested_vmx_check_nmi_controls": f"{R} (vmx/nested.c)",
    "nested_check_vm_entry_controls": f"{R} (vmx/nested.c): the check that the deliver-error-code bit "
                                      "agrees with the vector is skipped when L1's IA32_VMX_BASIC[56] "
                                      "(VMX_BASIC_NO_HW_ERROR_CODE_CC) is set, which KVM sets only on a host "
                                      "that has it; the simulated CPU (SDM 059) does not, so every case is "
                                      "5.11's",
    "nested_cpu_supports_monitor_trap_flag": f"{R} (vmx/nested.h)",
    "nested_vmx_exit_handled_mtf": f"{R} (vmx/nested.c)",
    "handle_ept_misconfig": f"{R}: the emulation pre-check renamed",
    "handle_ept_violation": f"{R}: the NMI-unblocking bit as in 6.1; the error code is computed in "
                            "__vmx_handle_ept_violation (vmx/common.h) and vcpu->arch.exit_qualification "
                            "is gone (the port's copy of it is read by nothing)",
    "handle_exception_nmi": f"{R}: #NM with the XFD payload, a #VE warning and 6.1's VMware #GP path, "
                            "none intercepted here; a #PF exit with EPT on still never reaches it",
    "handle_external_interrupt": R,
    "handle_interrupt_window": R,
    "handle_nmi_window": R,
    "handle_preemption_timer": f"{R}: the timer exit of an immediate exit is handled in the fastpath "
                               "(handle_fastpath_preemption_timer: back to the run loop, as this return "
                               "1); the slow handler is left to L2's emulated APIC timer, not modelled",
    "handle_triple_fault": R,
    "handle_ud": f"{R}: the emulation pre-check is kvm_check_emulate_insn, which lets it through here",
    "handle_vmlaunch": R,
    "handle_vmresume": R,
    "update_exception_bitmap": f"{R} (vmx_update_exception_bitmap): #VE only with "
                               "CONFIG_KVM_INTEL_PROVE_VE, out of model",
    "vmx_apic_init_signal_blocked": R,
    "vmx_cancel_injection": R,
    "vmx_complete_interrupts": R,
    "vmx_enable_irq_window": R,
    "vmx_enable_nmi_window": R,
    "vmx_enable_smi_window": R,
    "vmx_get_if": f"{R} (vmx_get_rflags)",
    "vmx_get_interrupt_shadow": R,
    "vmx_get_nmi_mask": R,
    "vmx_handle_exit": f"{R} (__vmx_handle_exit): emulation_required never holds here",
    "vmx_handle_exit_irqoff": f"{R}: the host handles the #MC (handle_exception_irqoff); the port queues "
                              "the VMM's #MC (impls.hw.environment)",
    "vmx_inject_nmi": R,
    "vmx_interrupt_allowed": R,
    "vmx_interrupt_blocked": f"{R}: the same test, in __vmx_interrupt_blocked",
    "vmx_nmi_allowed": R,
    "vmx_nmi_blocked": R,
    "vmx_recover_nmi_blocking": R,
    "vmx_request_immediate_exit": f"{R}: no such hook: vcpu_enter_guest passes "
                                  "KVM_RUN_FORCE_IMMEDIATE_EXIT to vmx_vcpu_run, which arms the "
                                  "preemption timer at 0 (vmx_update_hv_timer) as the hook did",
    "vmx_set_interrupt_shadow": R,
    "vmx_set_nmi_mask": R,
    "vmx_skip_emulated_instruction": f"{R}: the exit reason read through vmx_get_exit_reason",
    "vmx_smi_allowed": R,
    "vmx_vcpu_reset": f"{R}: the segment-cache reset moved, CET state added; nothing the event paths read",
    "vmx_vcpu_run": f"{R}: recover_nmi_blocking, complete_interrupts, handle_exit_irqoff in 6.1's order; "
                    "the immediate exit is a run flag (see vmx_request_immediate_exit), the IDT-vectoring "
                    "read moved into vmx_vcpu_enter_exit, the fastpath now also runs in guest mode (the "
                    "preemption timer only), not modelled",
    "vmx_need_pf_intercept": f"{R} (vmx.h): the host MAXPHYADDR read from kvm_host",
    "load_vmcs12_host_state": f"{R} (vmx/nested.c): CET state and DEBUGCTL, not modelled",
    "nested_vmx_fail": f"{R} (vmx/nested.c): the eVMCS test through a helper",
    "nested_vmx_failValid": f"{R} (vmx/nested.c): the eVMCS test through a helper",
    "nested_vmx_is_page_fault_vmexit": f"{R} (vmx/nested.c)",
    "nested_vmx_l0_wants_exit": f"{R} (vmx/nested.c): #VE and Hyper-V's L2 TLB-flush VMCALL added, "
                                "neither arises",
    "nested_vmx_l1_wants_exit": f"{R} (vmx/nested.c): new exit reasons (MSR immediates, SEAMCALL, "
                                "TDCALL; XSAVES always L1's), none arises",
    "nested_vmx_preemption_timer_pending": f"{R} (vmx/nested.c)",
    "nested_vmx_reflect_vmexit": f"{R} (vmx/nested.c)",
    "sync_vmcs02_to_vmcs12": f"{R} (vmx/nested.c): the activity state from mp_state",
    "prepare_vmcs02_early": f"{R} (vmx/nested.c): posted_intr_nv reset without posted interrupts; the "
                            "host EFER read from kvm_host",
    "nested_exit_on_intr": f"{R} (vmx/nested.h)",
    "nested_exit_on_nmi": f"{R} (vmx/nested.h)",
}

#: name -> where its 6.18 version was read, and what differs there unmodelled.
REUSED_FROM_61: dict[str, str] = {**_X86_61, **_SVM_61, **_VMX_61}
REUSED_FROM_511: dict[str, str] = {**_X86_511, **_SVM_511, **_VMX_511}
