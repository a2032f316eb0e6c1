"""The pre-patch port: KVM's event injection as in Linux 5.11 / the kvm queue
of February 2021, the tree the RFC "separate injected and pending exception"
was written against, running on the simulated CPU of `impls.hw`.

Modules: `state` (kvm_host.h, uapi and vendor structures), `x86` (x86.c and
its helpers), `vmx` / `vmx_nested` (vmx/vmx.c, vmx/nested.c), `svm` /
`svm_nested` (svm/svm.c, svm/nested.c), `vcpu` (the vCPU class and the
kvm_x86_ops tables), `driver` (scenario events as VMM, L1 and guest actions).
What is simplified is named once, in `impls.hw.environment`.
"""
from __future__ import annotations

from impls.api import Implementation, Outcome
from impls.prepatch.driver import Driver
from impls.prepatch.vcpu import Vcpu


class Prepatch(Implementation):
    name = "prepatch"
    origin = "Linux 5.11-rc7 / kvm queue Feb 2021 (x86.c 7131636e, vmx 39485ed9/d51e1d3f, svm 39485ed9/f2c7ef3b)"
    summary = "port of KVM's event injection before the RFC, on the simulated CPU"

    #: The vCPU class and the scenario driver a port runs; later ports
    #: override them.
    vcpu_class = Vcpu
    driver_class = Driver

    #: Fidelity (tests/test_fidelity.py): the tree every function of this
    #: port names in @origin, and the other trees whose functions it runs:
    #: tree -> None (all: the port is a patch series over that tree) or
    #: {function: where this port's tree was read to find it unchanged}.
    #: Each port declares both on its own class.
    kernel_tree = "5.11-rc7"
    takes_over: dict = {}

    def run(self, scenario) -> Outcome:
        driver = self.driver_class(scenario, self.vcpu_class)
        driver.run_events()
        return driver.outcome()
