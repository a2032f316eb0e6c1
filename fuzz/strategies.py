"""Hypothesis strategies that build scenarios directly, from `SPECS`.

Every event kind and parameter type of the event language has a strategy
here, derived from its spec, so a new kind is generated (and its rule
appears in `fuzz.stateful`) without touching this module.  Values stay
inside what the binary form holds (error codes to 0xffff, an injected
event's to 32 bits, addresses to 0xffff000), so every generated scenario
can be saved as a `.bin` too.

    >>> from fuzz.strategies import scenarios
    >>> scenarios(max_events=8).example()          # doctest: +SKIP
    Scenario(config=Config(vendor='svm', ...), events=(Event('l1.vmentry', ...), ...))

Shrinking goes towards fewer events, earlier kinds in `SPECS` order, the
defaults of each parameter, VMX with nested paging on and no caps.
"""
from __future__ import annotations

from hypothesis import strategies as st

from fuzz.scenario import CAPS, EXCEPTION_VECTORS, SPECS, VENDORS, Config, Event, EventSpec, Param, PType, Scenario, \
    normalise
from impls.arch import Ev, EvType, has_error_code

#: Vectors worth more than their 1/256 share: the exceptions, NMI's 2, the
#: first external-interrupt vector the seeds use, and the top of the range.
_INTERESTING_VECTORS = sorted(set(EXCEPTION_VECTORS) | {2, 0x20, 0x21, 0x80, 0xff})


def vectors() -> st.SearchStrategy[int]:
    return st.one_of(st.sampled_from(_INTERESTING_VECTORS), st.integers(0, 255))


def exception_vectors(domain=EXCEPTION_VECTORS) -> st.SearchStrategy[int]:
    return st.sampled_from(domain)


def error_codes() -> st.SearchStrategy[int]:
    return st.one_of(st.sampled_from((0, 2, 0x10)), st.integers(0, 0xFFFF))


def injectable_events() -> st.SearchStrategy[Ev | None]:
    """What L1 can inject on VM entry: nothing, NMI, an external interrupt,
    a software interrupt, a hardware exception (with the error code its
    vector pushes), or any other value of the injection fields for the entry
    checks to judge: any type, vector, deliver-error-code bit, a 32-bit
    error code and the reserved bits the binary form holds (19:12)."""
    def exc(vector, ec):
        return Ev(EvType.HW_EXCEPTION, vector, ec if has_error_code(vector) else None)

    return st.one_of(
        st.none(),
        st.just(Ev(EvType.NMI, 2)),
        st.builds(Ev, st.just(EvType.EXT_INTR), vectors()),
        st.builds(Ev, st.just(EvType.SOFT_INT), vectors()),
        st.builds(exc, exception_vectors(), error_codes()),
        st.builds(Ev, st.sampled_from(list(EvType)), vectors(),
                  st.one_of(st.none(), error_codes(), st.sampled_from((0x10000, 0xDEADBEEF))),
                  st.sampled_from((0, 0, 0, 1, 0x80))),
    )


def values(param: Param) -> st.SearchStrategy:
    """The strategy for one parameter, by its type."""
    t = param.type
    if t is PType.VECTOR:
        return vectors()
    if t is PType.EXC:
        return st.sampled_from(param.domain)
    if t is PType.OPT_EXC:
        return st.one_of(st.none(), st.sampled_from(param.domain))
    if t is PType.U8 and param.name == "insn_len":
        # The lengths that decide something: none, INT3's, INT n's, the
        # longest an entry takes (15) and one past it (SDM 26.2.1.3).
        return st.sampled_from((0, 1, 2, 3, 15, 16))
    if t is PType.U8:
        return st.integers(0, 255)
    if t is PType.U16 or t is PType.EC32:  # the binary form holds 16 bits of either
        return error_codes()
    if t is PType.PAGE:
        return st.integers(0, 0xFFFF).map(lambda n: n << 12)
    if t is PType.BOOL:
        return st.booleans()
    if t is PType.ENUM:
        return st.sampled_from(param.choices)
    if t is PType.VECSET:  # an exception bitmap: a set of vectors 0..31
        return st.frozensets(st.one_of(exception_vectors(), st.integers(0, 31))).map(
            lambda vs: sum(1 << v for v in vs))
    if t is PType.EVENT:
        return injectable_events()
    raise NotImplementedError(f"no strategy for parameter type {t} (parameter '{param.name}'): add one to "
                              "fuzz/strategies.py:values()")


def arguments(spec: EventSpec) -> dict[str, st.SearchStrategy]:
    """Keyword strategies for one kind's parameters (for rules)."""
    return {p.name: values(p) for p in spec.params}


def make_event(spec: EventSpec, kwargs: dict) -> Event:
    return normalise(Event(spec.kind, tuple(kwargs[p.name] for p in spec.params)))


def events_of(spec: EventSpec) -> st.SearchStrategy[Event]:
    """Events of this kind.  Arguments that `normalise` gives to another
    kind (`exception #BP` is `int3`) are left to that kind's strategy."""
    return st.fixed_dictionaries(arguments(spec)).map(lambda kw: make_event(spec, kw)).filter(
        lambda ev: ev.kind == spec.kind)


def events(kinds=None) -> st.SearchStrategy[Event]:
    """Any event (of `kinds`, default every kind in `SPECS`)."""
    specs = [s for s in SPECS if kinds is None or s.kind in kinds]
    return st.one_of([events_of(s) for s in specs])


def configs() -> st.SearchStrategy[Config]:
    return st.builds(Config, vendor=st.sampled_from(VENDORS), npt=st.booleans(),
                     caps=st.frozensets(st.sampled_from(CAPS)))


def scenarios(max_events: int = 16) -> st.SearchStrategy[Scenario]:
    return st.builds(Scenario, config=configs(),
                     events=st.lists(events(), max_size=max_events).map(tuple))
