"""What the KVM ports rely on but do not model: named once, applied to every port.

The simulated CPU (`impls.hw.cpu`) runs whatever context KVM entered.  Some
parts of the machine below and around KVM are not under study; they are driven
by the scenario's events instead of being modelled, and every KVM port
(prepatch, postpatch, upstream) sees them identically:

* **The shadow MMU's verdict.**  With nested paging off, L0 intercepts every
  #PF (shadow paging).  Whether an intercepted #PF is a fault the guest must
  see, or one L0 fixes and then resumes, is the scenario's choice: a #PF from
  `exception #PF`, from `delivery_fault #PF` or from a faulting handler stack
  (`lN.stack #PF`) is guest-visible (the MMU's page walk fails, KVM calls
  `kvm_inject_emulated_page_fault`); a #PF from `l0.mmu_fixup` is fixed
  (`kvm_mmu_page_fault` returns 1 with nothing queued).  With nested paging
  on, `l0.mmu_fixup` is an EPT violation / NPF that L0 fixes; guest-visible
  #PFs never reach L0 unless L1 intercepts them.  Under shadow paging the
  exit carries the shadow tables' error code (RSVD clear: KVM puts reserved
  bits only in MMIO entries) and KVM's walk finds the guest's own error code
  (`Environment.shadow_pf_exit`).  L1 never uses nested
  paging (EPT12/NPT12) for L2, so every L2 #PF is an L2 page-table fault.
* **The instruction emulator.**  `l0.emulate [fault=V]` is an instruction L0
  must emulate (an MMIO access: EPT misconfiguration on VMX, an NPF on SVM,
  whatever the paging mode); the emulator either completes it or raises V,
  which KVM queues through `inject_emulated_exception` /
  `kvm_inject_emulated_page_fault`; it decodes in the mode of the level
  that exited (a #BR in 64-bit mode is #UD, `impls.arch.possible`).  A #UD that L0 intercepts goes to the
  emulator too (`handle_ud`), which fails to decode it and queues #UD.
* **Host-side events.**  A guest #MC is a host machine check: the host's
  handler and the VMM turn it back into a guest #MC as KVM_X86_SET_MCE would,
  i.e. `kvm_queue_exception(#MC)`.  The host's own timer interrupt ends every
  guest instruction: after the guest executes an instruction (or, in a
  `run`, a no-op), or finishes a delivery chain, the CPU exits to L0 with a
  physical external interrupt, which KVM handles and re-enters.  This is how
  the driver stops the guest between scenario events.  `l0.immediate_exit`
  is a kick (a signal) that makes the next `vcpu_enter_guest` see
  `kvm_vcpu_exit_request` after it injected events, i.e. cancel them.
  `user.run_exit` is a signal the VMM's vCPU thread has when it calls
  KVM_RUN: the same kick, and then vcpu_run's check for work before the next
  entry returns -EINTR (KVM_EXIT_INTR) with what KVM holds.  KVM_RUN's
  `immediate_exit` returns -EINTR before vcpu_run, changing nothing.  The
  signal is never seen inside the SMM handler (which returns at once): a
  pass that entered SMM runs on, without it, to the handler's RSM.
* **Timed events.**  `timer` counts guest instructions (`impls.timer`):
  the simulated CPU counts each instruction event it dispatches
  (`Cpu.instructions`), and the driver makes the due events pending after
  the vcpu_run pass that executed it, through the LAPIC (`kvm_apic_set_irq`)
  or `kvm_inject_nmi`, as an APIC timer, a delayed NMI or an IPI would.
* **The interrupt controller.**  In-kernel LAPIC, split irqchip: `irq V` sets
  V in the IRR (KVM_REQ_EVENT and a kick); the highest pending vector is
  delivered first; there is no ISR / PPR / EOI (the guest never EOIs, as in
  the reference).  KVM_INTERRUPT (`user.interrupt`) goes to
  `pending_external_vector` (split irqchip): the VMM's userspace PIC holds
  the vectors and, before each KVM_RUN, issues KVM_INTERRUPT for its highest
  one when KVM has none pending (-EEXIST otherwise).  The VMM carries a pending ExtINT over a migration.
* **HLT.**  L0 always intercepts HLT (VMX HLT exiting, SVM's HLT
  intercept), in L1 and in L2, so the CPU never enters the HLT state: a
  halted vCPU is KVM's mp_state HALTED, and `kvm_vcpu_block` sleeping with
  nothing to wake it is a quiescent point where the driver's KVM_RUN
  returns (`Vcpu.blocked`); the next KVM_RUN starts there again.  Instruction
  events of a halted vCPU are never executed.  L1 writes vmcs12's guest
  activity state from `l1.vmentry activity=` and, after an exit for HLT
  under its HLT exiting / intercept (`l1.controls hlt=1`), skips the HLT.
  The VMM migrates mp_state (KVM_GET_MP_STATE / KVM_SET_MP_STATE) with the
  rest of the vCPU.
* **L1, the hypervisor.**  L1 writes vmcs12 / vmcb12 from `l1.intercept` and
  `l1.vmentry` only: exception bitmap, #PF mask/match, NMI exiting (with
  virtual NMIs) and external-interrupt exiting (no acknowledge-on-exit), the
  SVM intercepts (always VMRUN and VMMCALL; INIT if `init=1`), and from
  `l1.controls` VMX's interrupt-window and NMI-window exiting, SVM's
  V_INTR_MASKING (also with the INTR intercept), V_IRQ (priority 0Fh,
  vector `impls.arch.svm.L1_V_INTR_VECTOR`; cleared by `v_irq=0`, else left
  as KVM wrote vmcb12 back) and the VINTR intercept; no MTF control (a
  type-7 injection only), no
  preemption timer, no EPT/NPT for L2.  L2's guest state (modes, tables,
  IF, shadows, NMI blocking, CR2) lives in the simulated CPU and persists
  across exits, as vmcs12 / vmcb12 would carry it.  What L1 does with that
  state is `impls.l1`, which the reference applies too: L1 writes L2's
  blocking by STI / MOV SS, RFLAGS.IF and pending debug exceptions as
  `l1.vmentry` says (into that state, which KVM's prepare_vmcs02 /
  nested_vmcb02_prepare_save would copy unchanged); on VMX an L1 that
  injects an NMI clears L2's blocking by NMI first (SDM 31.7.1.2); after an
  exit for an instruction it emulates (VMCALL / VMMCALL) L1 skips it,
  moving L2's RIP and ending its STI / MOV-SS blocking.  L1 uses VMLAUNCH for its
  first entry and VMRESUME after.  L1 has executed VMXON (VMX) or set
  EFER.SVME (SVM) from the start, and never leaves VMX operation.  After an
  exit before or during the delivery of L2's INT n / INT3 / INTO / INT1
  (whose RIP is still on the instruction), L1 does not let L2 execute it
  again: it re-injects the event only if `l1.vmentry inject=` says so, as in
  the reference.  L1 sets neither SVM's INTn nor its ICEBP intercept.
* **INIT and reset.**  `init` is an INIT IPI the in-kernel LAPIC accepts
  (`__apic_accept_irq`, APIC_DM_INIT: `apic.pending_events`, KVM_REQ_EVENT,
  and a kick that is a no-op, the vCPU being outside guest mode between
  scenario events).  KVM's own code decides when it is latched, when it becomes a
  nested VM exit and when `kvm_apic_accept_events` resets the vCPU.  The vCPU
  is the BSP (vcpu_id 0, RUNNABLE from creation), so after a reset it would
  be RUNNABLE again, never INIT_RECEIVED, and no SIPI is ever sent.  A reset
  is not followed: `kvm_vcpu_reset(init_event=True)` records
  `Reset(level)` (level 2 if the vCPU was in guest mode) as L1's
  observation and raises `VcpuReset`; the driver stops processing events,
  as after a shutdown, and reports no final state.  What KVM would reset
  (registers, the VMCS/VMCB, and, in 5.11, a guest mode it does not leave)
  is not modelled.  The VMM carries `apic.pending_events` over a migration
  with the rest of the LAPIC.
* **SMM.**  `smi` is the VMM's KVM_SMI (`kvm_vcpu_ioctl_smi`: KVM_REQ_SMI),
  KVM's own code decides when the SMI is taken and runs `enter_smm`.  The
  SMM handler is firmware that executes RSM at once: once KVM's enter_smm
  has pointed the guest at it (the CPU's `smm_handler`, standing for RIP =
  0x8000 in SMRAM), the guest's next instruction is RSM, before anything
  the driver asked for; it reaches KVM as a #UD (VMX) or the RSM intercept
  (SVM), and KVM emulates it (`em_rsm`).  The SMRAM state-save area is the
  CPU's `smram`: the port stores there what its enter_smm saves that the
  event paths can see (RFLAGS.IF; in 6.1 no interrupt shadow either, and
  NMI blocking is KVM's HF_SMM_INSIDE_NMI_MASK, not SMRAM), and its RSM
  restores it.  Registers, segments, CR0/CR4/EFER, the IDT limit 0 of SMM
  and SMBASE are not modelled: nothing is delivered inside SMM (IF=0 and
  NMIs masked there, and KVM injects nothing into the handler).  The
  scenario never reaches a boundary in SMM: the driver keeps KVM_RUN going
  while KVM's HF_SMM_MASK is set.
* **Simplifications of the CPU.**  No HLT / activity states (so no
  wait-for-SIPI), no TSC or timers, no debug registers; the only TF single-step
  is the one KVM's SVM NMI window sets, and it traps after the next
  instruction or completed delivery at that level (a delivery does not clear
  it); RIP is an instruction counter per level; CR2 is
  one register on VMX (the VMCS does not hold it) and per level on SVM (the
  VMCB save area does), as in the reference; every IDT gate is an interrupt gate,
  `mov_ss` after `mov_ss` always blocks; a mode change (`lN.mode` of the
  running level) is an instruction the CPU executes, not a CR0 / EFER write
  that exits to L0.  On SVM, an EVENTINJ error code is
  not pushed in real mode (the APM is silent; the port of KVM never relies on
  it).  The VMX CPU has unrestricted guest, virtual NMIs, the preemption
  timer (KVM's immediate exit) and no vm86 real mode; the SVM CPU has NRIPS
  and no vGIF / AVIC / vNMI, so L0 intercepts STGI and CLGI.  INT n (two
  bytes), INT3, INTO and INT1 (one byte each, `impls.arch.INSTRUCTION_LENGTH`):
  until the handler of their event is reached RIP stays on the instruction,
  so when L0 re-enters without injecting anything first the CPU executes it
  again (`LevelState.restart`); KVM skipping it (RIP moving) ends that.
  RIP is a per-level count: every other instruction is one byte
  (`hw.cpu.PLAIN_LENGTH`), L1's code and L2's lie apart (`hw.cpu.RIP_BASE`),
  and a delivery records the return address it pushes relative to the
  instruction that raised or was interrupted (`LevelState.insn_rip`):
  RIP for a fault or an interrupt, RIP + the VM-entry instruction length
  for an injected VMX type 4/5/6, next_rip for an injected SVM INTn / INT3 /
  INTO.  The VMX CPU reports instruction lengths in the VM-exit
  instruction-length field only for exits on INT3 / INTO / INT1 and during
  the delivery of software events (SDM 27.2.4); it does not check the
  VM-entry instruction length (KVM's nested checks do).  The SVM CPU saves
  nRIP on instruction intercepts and INT3 / INTO exception intercepts, zero
  on every other exit (APM 15.7.1); KVM's emulator decoding the instruction
  at RIP (EMULTYPE_SKIP) finds INT n / INT3 / INTO / INT1 where one is there,
  else a plain one-byte instruction (`LevelState.instruction_length`).
  L1's CPUID has NRIPS: KVM advertises it to every L1
  (svm->nrips_enabled).  The VMX CPU raises #CP with an error code
  (`arch.VECTORS`), so its VM-entry check on the deliver-error-code bit
  takes every vector that pushes one (`arch.has_error_code`) and accepts L0
  re-injecting a #CP its own exit reported; the SDM 059 list that the
  reference applies to L1's entries (`arch.vmx.ENTRY_ERROR_CODE_VECTORS`)
  predates CET and has no #CP.  Its other VM-entry checks are the SDM's
  (`arch.vmx.entry_control_error`, SDM 26.3.1.4-5 in
  `Cpu._vmx_guest_state_invalid`): it supports the monitor trap flag, so
  type 7 vector 0 injects a pending MTF exit; it does not require the
  absence of STI blocking for an NMI injection (the SDM lets a processor
  choose); a pending debug exception L1 leaves in L2's pending-debug field
  is checked (BS against STI / MOV-SS blocking) but not delivered after the
  entry (SDM 26.6.3 not stored; the reference allows both).  The SVM CPU's
  VMRUN takes as EVENTINJ exceptions the vectors of SDM Table 6-1 but 2, 9,
  15 and 20-31 (APM 15.20 names vector 2; AMD's table is not stored), takes
  EV as given (an error code pushed or not, whatever the vector) and
  ignores EVENTINJ's reserved bits 30:12.
* **The VMM.**  It issues the ioctls the `user.*` events name and nothing
  else; KVM_EXIT_SHUTDOWN ends the scenario (`Outcome.shutdown`), and so does
  an exit it cannot handle (KVM_EXIT_INTERNAL_ERROR, KVM_EXIT_FAIL_ENTRY),
  which is recorded as an alarm.  It enables KVM_CAP_EXCEPTION_PAYLOAD when
  the scenario lists `exception_payload`; caps the kernel does not have are
  not enabled.  With KVM_SET_VCPU_EVENTS it sets
  `has_error_code` as the guest's mode requires, and a #BP / #OF comes with
  RIP on the INT3 / INTO that raised it, as KVM's ABI assumes
  (KVM_GET_VCPU_EVENTS leaves software exceptions out, for the guest to
  raise them again).  A migration carries every
  other piece of state (registers, nested state, LAPIC) faithfully; only the
  event state goes through KVM_GET_VCPU_EVENTS / KVM_SET_VCPU_EVENTS.

`Origin` tags a fault the CPU raises with where the scenario made it come
from, so that KVM's MMU and emulator can ask this module for their verdict.
"""
from __future__ import annotations

import enum

from impls.arch.possible import raised

#: The RSVD bit of a #PF error code (SDM 4.7, Figure 4-12).
PFERR_RSVD = 1 << 3


class VcpuReset(Exception):
    """Raised by a port's kvm_vcpu_reset(init_event=True) once it has
    recorded the `Reset`: the driver catches it and follows the vCPU no
    further (see the module docstring, "INIT and reset")."""


class Origin(enum.Enum):
    """Where a fault the simulated CPU raises comes from (scenario events)."""

    GUEST = "guest-visible"  # exception / delivery_fault / faulting stack / gate
    FIXUP = "L0-fixable"  # l0.mmu_fixup
    EMULATE = "emulation"  # l0.emulate: an instruction L0 must emulate
    RSM = "the SMM handler's RSM"  # the instruction L0 must emulate is RSM


class Environment:
    """The scenario-driven parts, per vCPU run: what the shadow MMU and the
    emulator answer.  The CPU records the origin of the fault behind its
    latest exit; KVM's MMU and emulator port call these methods."""

    __slots__ = ("last_origin", "emulate_fault", "kick", "guest_pf", "signal")

    def __init__(self):
        self.last_origin: Origin | None = None
        #: (vector, error code, address) the emulator raises, or None.
        self.emulate_fault: tuple[int, int, int] | None = None
        #: `l0.immediate_exit`: a pending kick for the next vcpu_enter_guest.
        self.kick = False
        #: `user.run_exit`: a signal pending for the vCPU thread, which KVM
        #: handles by returning to userspace (xfer_to_guest_mode_handle_work).
        self.signal = False
        #: the guest's #PF error code behind the latest shadow-paging #PF exit
        self.guest_pf: int | None = None

    def shadow_pf_exit(self, guest_error_code: int) -> int:
        """A guest's own #PF that L0's shadow paging intercepts: the exit's
        error code is the shadow page tables' (KVM builds no reserved bits
        into a shadow entry but for MMIO, so RSVD is clear), and the guest's
        error code is what KVM's walk of the guest's tables finds
        (`guest_pf_error_code`).  Returns the exit's error code."""
        self.guest_pf = guest_error_code
        return guest_error_code & ~PFERR_RSVD

    def guest_pf_error_code(self, exit_error_code: int) -> int:
        """The error code of the guest fault KVM's page walk finds behind the
        latest shadow-paging #PF exit (`shadow_pf_exit`)."""
        return self.guest_pf if self.guest_pf is not None else exit_error_code

    def mmu_fault_is_guest_visible(self) -> bool:
        """The shadow MMU's page walk: True if the #PF L0 intercepted is the
        guest's own fault (KVM must inject it), False if L0 fixes it."""
        return self.last_origin is Origin.GUEST

    def emulator_decodes_rsm(self) -> bool:
        """The instruction behind the latest exit is the SMM handler's RSM
        (the emulator decodes it, even under EMULTYPE_TRAP_UD)."""
        return self.last_origin is Origin.RSM

    def decode_in(self, mode) -> None:
        """The CPU exited for the instruction to emulate at a level in
        `mode`: the emulator raises what that instruction raises there
        (`impls.arch.possible.raised`: BOUND is #UD in 64-bit mode, no #PF
        in real mode)."""
        if self.emulate_fault is not None:
            vector, ec, cr2 = self.emulate_fault
            actual = raised(vector, mode)
            if actual is None:
                self.emulate_fault = None
            elif actual != vector:
                self.emulate_fault = (actual, 0, 0)

    def emulator_fault(self) -> tuple[int, int, int] | None:
        """What the emulated instruction raises: (vector, ec, cr2) or None."""
        f, self.emulate_fault = self.emulate_fault, None
        return f

    def take_kick(self) -> bool:
        k, self.kick = self.kick, False
        return k
