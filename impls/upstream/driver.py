"""The shared scenario driver (`impls.prepatch.driver`), with the two things
6.1 adds to what a VMM and the driver must see:

* KVM holds an event in flight also while an exception waits in
  `exception_vmexit` to become a nested VM exit (kvm_is_exception_pending),
  the driver keeps running the vCPU until it has.
* Each KVM_RUN enters through `kvm_arch_vcpu_ioctl_run`, which morphs an
  exception userspace set as pending in L2 into a nested VM exit; the
  KVM_RUN of `user.run_exit` too (a signal is seen only in vcpu_run).
"""
from __future__ import annotations

from impls.origin import glue
from impls.prepatch.driver import Driver as Driver511


@glue("the scenario driver, with what 6.1 adds for a VMM (no kernel code)")
class Driver(Driver511):
    def in_flight(self) -> bool:
        return super().in_flight() or self.vcpu.arch.exception_vmexit.pending

    def kvm_run(self, phase: str, instr: tuple | None = None, instr_level: int | None = None) -> None:
        self.vcpu.kvm_arch_vcpu_ioctl_run()
        super().kvm_run(phase, instr, instr_level)

    def ev_user_run_exit(self, ev):
        self.vcpu.kvm_arch_vcpu_ioctl_run()
        super().ev_user_run_exit(ev)
