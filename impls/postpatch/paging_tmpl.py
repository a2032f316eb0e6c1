"""Patch 2/4, "mmu: initialize fault.async_page_fault in walk_addr_generic"
(arch/x86/kvm/mmu/paging_tmpl.h): nothing to port, and why.

The hunk adds one assignment to the error tail of the guest page walker,
`walk_addr_generic`: the `struct x86_exception` it returns now has
`async_page_fault = false` next to `address` and `nested_page_fault`.  Before
it, the field was whatever the caller's stack held, and in guest mode
`kvm_inject_page_fault` copies it into `nested_apf`: a real #PF could then
reach L1 with the async-PF token as its address (SVM EXITINFO2, VMX exit
qualification) and, on VMX, skip the #PF error-code mask/match.

No port has the page walker: the MMU's verdict is a scenario input
(impls.hw.environment), and the fault KVM injects is built as an
`X86Exception` whose constructor (impls.prepatch.state) already sets
`async_page_fault = False` -- a deterministic value, which is what the
patch makes true in the kernel.  Host async page faults are not modelled
either (`apf_host_apf_flags` is always 0).  So pre- and post-patch ports
behave alike here, and patch 2/4 has no observable effect in evdiff; a
scenario kind that made the walker's field an input would be needed to show
the pre-patch bug.
"""
