"""The simulated physical CPU beneath the KVM ports (`cpu`), and the parts of
the machine driven by scenario events instead of modelled (`environment`)."""
from impls.hw.cpu import CHAIN, INSTR, RUN, Cpu, LevelState, Recorder, Vmcb, Vmcs  # noqa: F401
from impls.hw.environment import Environment, Origin, VcpuReset  # noqa: F401
