"""The binary form of a scenario, for libFuzzer: decoding is total.

Layout: one header byte (bit 0 vendor svm, bit 1 nested paging off, bits 2-4
the caps in `CAPS` order), then fixed-size records of `RECORD` bytes, one an
event: a kind byte (taken modulo the number of kinds) and the parameters of
that kind in spec order, each in its own bytes, the rest padding.  Kinds
added to the language go last in `SPECS`, so a canonical record (as `encode`
writes it, kind byte below the number of kinds) keeps its meaning in later
versions, and so do the findings' `.bin` files; a raw libFuzzer input whose
kind byte is larger may read as another kind once kinds are added.  A
parameter added to a kind goes after its others, in bytes that were
padding, with a default that byte 0 encodes (`l1.vmentry insn_len=`), so an
older record reads as it did.  Every
byte string decodes: values are taken modulo their domain, a short last record is
padded with zeros, bytes past `MAX_EVENTS` records are ignored.  Because
records have a fixed size, changing one byte changes at most one event (or
the configuration), and a short input is a short scenario.

Decoding is many-to-one: records whose values have no architectural meaning
decode to the event that has one (`fuzz.scenario`): an error code on a
vector that pushes none is 0, one the manual fixes (#DF, #AC) is that
value, an address on anything but #PF is 0, an `exception` record of #BP /
#OF is `int3` / `into`, and without the
`exception_payload` cap a pending `user.set_exception` is an injected one,
and an `l1.controls` flag of the other vendor is 0 (so the header byte
also decides how such records read).
"""
from __future__ import annotations

from impls.arch import Ev, EvType
from fuzz.scenario import CAPS, EXCEPTION_VECTORS, SPECS, Config, Event, PType, Scenario, normalise

RECORD = 1 + max(sum(p.type.width for p in s.params) for s in SPECS)
MAX_EVENTS = 64
_KIND_INDEX = {s.kind: i for i, s in enumerate(SPECS)}
_NEXC = len(EXCEPTION_VECTORS)
_EXC_INDEX = {v: i for i, v in enumerate(EXCEPTION_VECTORS)}
#: EVENT type byte: 0 none, 1 external interrupt, 2 NMI, 3 exception, 4 INT n.
_EVENT_TYPES = (None, EvType.EXT_INTR, EvType.NMI, EvType.HW_EXCEPTION, EvType.SOFT_INT)


def _u(b: bytes) -> int:
    return int.from_bytes(b, "little")


def _decode_value(param, b: bytes):
    t = param.type
    if t is PType.VECTOR or t is PType.U8:
        return b[0]
    if t is PType.EXC:
        return param.domain[b[0] % len(param.domain)]
    if t is PType.OPT_EXC:
        i = b[0] % (len(param.domain) + 1)
        return None if i == 0 else param.domain[i - 1]
    if t is PType.U16:
        return _u(b)
    if t is PType.PAGE:
        return _u(b) << 12
    if t is PType.BOOL:
        return bool(b[0] & 1)
    if t is PType.ENUM:
        return param.choices[b[0] % len(param.choices)]
    if t is PType.VECSET:
        return _u(b)
    if t is PType.EVENT:
        typ = _EVENT_TYPES[b[0] % len(_EVENT_TYPES)]
        if typ is None:
            return None
        if typ is EvType.NMI:
            return Ev(typ, 2)
        if typ is EvType.HW_EXCEPTION:
            return Ev(typ, EXCEPTION_VECTORS[b[1] % _NEXC], _u(b[2:4]))
        return Ev(typ, b[1])
    raise AssertionError(t)


def _encode_value(param, v) -> bytes:
    t, w = param.type, param.type.width
    if t is PType.EXC:
        n = param.domain.index(v)
    elif t is PType.OPT_EXC:
        n = 0 if v is None else param.domain.index(v) + 1
    elif t is PType.PAGE:
        n = v >> 12
    elif t is PType.BOOL:
        n = int(v)
    elif t is PType.ENUM:
        n = param.choices.index(v)
    elif t is PType.EVENT:
        if v is None:
            return bytes(4)
        vec = _EXC_INDEX[v.vector] if v.type is EvType.HW_EXCEPTION else v.vector
        return bytes([_EVENT_TYPES.index(v.type), vec]) + (v.error_code or 0).to_bytes(2, "little")
    else:
        n = v
    return n.to_bytes(w, "little")


def _decode_config(head: int) -> Config:
    return Config(
        vendor="svm" if head & 1 else "vmx",
        npt=not head & 2,
        caps=frozenset(c for i, c in enumerate(CAPS) if head >> (2 + i) & 1),
    )


def _decode_record(rec: bytes) -> Event:
    spec = SPECS[rec[0] % len(SPECS)]
    pos, args = 1, []
    for p in spec.params:
        args.append(_decode_value(p, rec[pos : pos + p.type.width]))
        pos += p.type.width
    return normalise(Event(spec.kind, tuple(args)))


#: Decoded records and headers by their bytes.  Events are immutable, and
#: libFuzzer's inputs share most of their records with their parents, so a
#: fuzzer decodes mostly from here; bounded, cleared when full.
_RECORDS: dict[bytes, Event] = {}
_CONFIGS: dict[int, Config] = {}
_CACHE_MAX = 1 << 16


def decode(data: bytes) -> Scenario:
    """Any bytes to a scenario.  Never raises."""
    head = data[0] if data else 0
    config = _CONFIGS.get(head)
    if config is None:
        config = _CONFIGS[head] = _decode_config(head)
    events = []
    body = data[1 : 1 + RECORD * MAX_EVENTS]
    cache = _RECORDS
    for off in range(0, len(body), RECORD):
        rec = body[off : off + RECORD]
        ev = cache.get(rec)
        if ev is None:
            if len(cache) >= _CACHE_MAX:
                cache.clear()
            ev = cache[rec] = _decode_record(rec.ljust(RECORD, b"\0"))
        events.append(ev)
    return Scenario(config, tuple(events))


def encode(scenario: Scenario) -> bytes:
    """The canonical bytes of a scenario: `decode(encode(s)) == s` for every
    scenario whose values the binary form holds (error codes to 0xffff,
    addresses to 0xffff000, at most MAX_EVENTS events)."""
    c = scenario.config
    head = (c.vendor == "svm") | ((not c.npt) << 1)
    for i, cap in enumerate(CAPS):
        head |= (cap in c.caps) << (2 + i)
    out = bytearray([head])
    for ev in scenario.events:
        out += encode_record(ev)
    return bytes(out)


def encode_record(ev: Event) -> bytes:
    """One event's record, whatever the configuration it is decoded under."""
    rec = bytearray([_KIND_INDEX[ev.kind]])
    for p, v in zip(ev.spec.params, ev.args):
        rec += _encode_value(p, v)
    return bytes(rec.ljust(RECORD, b"\0"))
