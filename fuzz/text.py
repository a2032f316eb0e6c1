"""The text form of a scenario: one event a line, readable and writable by hand.

    ; a comment runs from ';' to the end of the line ('#' starts a vector: #GP)
    evdiff 1 vendor=vmx ept=off caps=exception_payload
    l1.intercept exceptions=#PF,#GP
    l2.idt #GP gate=not_present
    l1.vmentry inject=intr(0x20)
    run

The first line that is not blank or a comment is the header; the comment lines
before it are the scenario's description.  Every other line is
`kind [first-argument] [name=value ...]`.  `format_scenario` writes the one
canonical form (defaults left out), so `parse(format(s)) == s`.
"""
from __future__ import annotations

import difflib
from pathlib import Path

from impls.arch import MNEMONICS, Ev, EvType, has_error_code, mnemonic
from fuzz.scenario import (
    CAPS,
    EXCEPTION_PAYLOAD,
    EXCEPTION_VECTORS,
    EMULATOR_NEVER_RAISES,
    FIXED_ERROR_CODES,
    SOFT_EXCEPTION_KINDS,
    SPEC_BY_KIND,
    VENDORS,
    Config,
    EvdiffError,
    Event,
    Param,
    PType,
    Scenario,
    ScenarioError,
    VENDOR_CONTROLS,
    foreign_controls,
    normalise,
    pending_exception_unsettable,
    svm_vmentry,
)

COMMENT = ";"
HEADER = "evdiff 1"
#: Limits of a text scenario, so that memory stays bounded whatever the input
#: (`evdiff replay /dev/zero` is refused after its first MiB): the size of a
#: file, and the number of events (a minimised divergence has a handful; the
#: binary form holds 64).
MAX_TEXT_BYTES = 1 << 20
MAX_TEXT_EVENTS = 10_000


def _closest(word: str, choices) -> str:
    near = difflib.get_close_matches(word, list(choices), n=1)
    return f" (closest: {near[0]})" if near else ""


# ---------------------------------------------------------- value syntax --


def _int(text: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise ValueError(f"'{text}' is not a number") from None


def _vector(text: str) -> int:
    upper = {k.upper(): v for k, v in MNEMONICS.items()}
    if text.upper() in upper:
        return upper[text.upper()]
    if text.startswith("#"):
        raise ValueError(f"unknown vector '{text}'{_closest(text.upper(), upper)}")
    v = _int(text)
    if not 0 <= v <= 255:
        raise ValueError(f"vector {text} is not in 0..255")
    return v


def _exception(text: str, domain=EXCEPTION_VECTORS) -> int:
    v = _vector(text)
    if v not in domain:
        names = ",".join(mnemonic(x) for x in domain)
        raise ValueError(f"{text} is not one of the exceptions allowed here ({names})")
    return v


def _error_code(text: str) -> int:
    """An injected event's error code: 32 bits, as the VM-entry exception
    error code field (SDM 24.8.3) and EVENTINJ's ERRORCODE (APM 15.20)."""
    ec = _int(text)
    if not 0 <= ec <= 0xFFFF_FFFF:
        raise ValueError(f"error code {text} is out of range 0..0xffffffff")
    return ec


def _any_event(arg: str) -> Ev:
    """The inside of `ev(TYPE,VECTOR[,ec=X][,reserved=X])`: any type 0-7,
    vector, deliver-error-code bit (set by `ec=`) and reserved bits 30:12."""
    parts = [p.strip() for p in arg.split(",")]
    if len(parts) < 2:
        raise ValueError(f"ev({arg}) needs a type and a vector: ev(3,#GP,ec=0x0)")
    typ = _int(parts[0])
    if not 0 <= typ <= 7:
        raise ValueError(f"type {parts[0]} is not in 0..7")
    vector, ec, reserved = _vector(parts[1]), None, 0
    for part in parts[2:]:
        key, eq, val = part.partition("=")
        if key == "ec" and eq:
            ec = _error_code(val)
        elif key == "reserved" and eq:
            reserved = _int(val)
            if not 0 <= reserved <= 0x7FFFF:
                raise ValueError(f"reserved={val} is not a value of bits 30:12 (0..0x7ffff)")
        else:
            raise ValueError(f"'{part}' in ev(...) is neither ec= nor reserved=")
    return Ev(EvType(typ), vector, ec, reserved)


def _event_value(text: str) -> Ev | None:
    """`none`, `nmi`, `intr(0x20)`, `int(0x80)`, `#UD`, `#PF(0x2)` (`#GP`
    alone: the error code 0 a #GP pushes), and any other combination of
    the injection fields as `ev(TYPE,VECTOR[,ec=X][,reserved=X])`."""
    low = text.lower()
    if low == "none":
        return None
    if low == "nmi":
        return Ev(EvType.NMI, 2)
    head, _, rest = text.partition("(")
    arg = rest[:-1] if rest.endswith(")") else None
    if rest and arg is None:
        raise ValueError(f"'{text}' lacks a closing ')'")
    if head.lower() == "ev":
        if arg is None:
            raise ValueError(f"'{text}' needs a type and a vector: ev(3,#GP,ec=0x0)")
        return _any_event(arg)
    if head.lower() in ("intr", "int"):
        if arg is None:
            raise ValueError(f"'{text}' needs a vector: {head.lower()}(0x20)")
        typ = EvType.EXT_INTR if head.lower() == "intr" else EvType.SOFT_INT
        return Ev(typ, _vector(arg))
    vec = _exception(head)
    if arg is None:
        return Ev(EvType.HW_EXCEPTION, vec, 0 if has_error_code(vec) else None)
    if not has_error_code(vec):
        raise ValueError(f"{mnemonic(vec)} pushes no error code: ev(3,{mnemonic(vec)},ec={arg}) injects one anyway")
    return Ev(EvType.HW_EXCEPTION, vec, _error_code(arg))


def _short_form(ev: Ev) -> bool:
    """Whether `ev` has one of the short spellings of `_event_value`."""
    if ev.reserved:
        return False
    if ev.type is EvType.HW_EXCEPTION:
        return ev.vector in EXCEPTION_VECTORS and has_error_code(ev.vector) == (ev.error_code is not None)
    if ev.type is EvType.NMI:
        return ev.vector == 2 and ev.error_code is None
    return ev.type in (EvType.EXT_INTR, EvType.SOFT_INT) and ev.error_code is None


def _format_event_value(ev: Ev | None) -> str:
    if ev is None:
        return "none"
    if not _short_form(ev):
        exc = ev.type in (EvType.HW_EXCEPTION, EvType.PRIV_SOFT_EXCEPTION, EvType.SOFT_EXCEPTION)
        vector = mnemonic(ev.vector) if exc and ev.vector < 32 and ev.vector != 2 else f"{ev.vector:#x}"
        ec = "" if ev.error_code is None else f",ec={ev.error_code:#x}"
        reserved = f",reserved={ev.reserved:#x}" if ev.reserved else ""
        return f"ev({int(ev.type)},{vector}{ec}{reserved})"
    if ev.type is EvType.NMI:
        return "nmi"
    if ev.type is EvType.EXT_INTR:
        return f"intr({ev.vector:#x})"
    if ev.type is EvType.SOFT_INT:
        return f"int({ev.vector:#x})"
    name = mnemonic(ev.vector)
    return name if ev.error_code is None else f"{name}({ev.error_code:#x})"


def _bool(text: str) -> bool:
    low = text.lower()
    if low in ("1", "on", "yes", "true"):
        return True
    if low in ("0", "off", "no", "false"):
        return False
    raise ValueError(f"'{text}' is not a boolean (0 or 1)")


def parse_value(param: Param, text: str):
    t = param.type
    if t is PType.VECTOR:
        return _vector(text)
    if t is PType.EXC:
        return _exception(text, param.domain)
    if t is PType.OPT_EXC:
        return None if text.lower() == "none" else _exception(text, param.domain)
    if t in (PType.U8, PType.U16, PType.EC32):
        v = _int(text)
        hi = {PType.U8: 0xFF, PType.U16: 0xFFFF, PType.EC32: 0xFFFF_FFFF}[t]
        if not 0 <= v <= hi:
            raise ValueError(f"{param.name}={text} is out of range 0..{hi:#x}")
        return v
    if t is PType.PAGE:
        v = _int(text)
        if v % 0x1000 or not 0 <= v < 0x1000_0000:
            raise ValueError(f"{param.name}={text} must be a multiple of 0x1000 below 0x10000000")
        return v
    if t is PType.BOOL:
        return _bool(text)
    if t is PType.ENUM:
        if text not in param.choices:
            raise ValueError(f"{param.name}={text} is not one of {', '.join(param.choices)}")
        return text
    if t is PType.VECSET:
        if text.lower() == "none":
            return 0
        mask = 0
        for part in text.split(","):
            v = _vector(part)
            if v > 31:
                raise ValueError(f"{part} is not an exception vector (0..31)")
            mask |= 1 << v
        return mask
    if t is PType.EVENT:
        return _event_value(text)
    raise AssertionError(t)


def format_value(param: Param, value) -> str:
    t = param.type
    if t in (PType.VECTOR, PType.EXC, PType.OPT_EXC):
        if value is None:
            return "none"
        return mnemonic(value) if value < 32 else f"{value:#x}"
    if t is PType.U8:
        return str(value)
    if t in (PType.U16, PType.EC32, PType.PAGE):
        return f"{value:#x}"
    if t is PType.BOOL:
        return "1" if value else "0"
    if t is PType.ENUM:
        return value
    if t is PType.VECSET:
        return ",".join(mnemonic(v) for v in range(32) if value >> v & 1) or "none"
    if t is PType.EVENT:
        return _format_event_value(value)
    raise AssertionError(t)


# ------------------------------------------------------------ lines --


def _parse_header(words: list[str]) -> Config:
    if words[:2] != HEADER.split():
        raise ValueError(f"expected the header '{HEADER} vendor=vmx|svm [ept|npt=on|off] [caps=...]' first")
    vendor, npt, caps = "vmx", True, frozenset()
    for word in words[2:]:
        key, eq, val = word.partition("=")
        if not eq:
            raise ValueError(f"header word '{word}' is not key=value")
        if key == "vendor":
            if val not in VENDORS:
                raise ValueError(f"vendor={val} is not one of {', '.join(VENDORS)}")
            vendor = val
        elif key in ("npt", "ept"):
            npt = _bool(val)
        elif key == "caps":
            names = [c for c in val.split(",") if c and c != "none"]
            for c in names:
                if c not in CAPS:
                    raise ValueError(f"unknown cap '{c}'{_closest(c, CAPS)}; caps are {', '.join(CAPS)}")
            caps = frozenset(names)
        else:
            raise ValueError(f"unknown header key '{key}'{_closest(key, ['vendor', 'npt', 'ept', 'caps'])}")
    return Config(vendor, npt, caps)


def parse_event_line(line: str, config: Config | None = None) -> Event:
    """One event line.  Values with no architectural meaning, written
    explicitly, are refused (the binary form maps them instead, `normalise`
    and `Scenario`): an error code a vector does not push or the manual
    fixes, an address for anything but #PF, and with `config` a pending
    `user.set_exception` its ABI cannot express or an `l1.controls` flag
    of the other vendor."""
    words = line.split()
    kind = words[0]
    spec = SPEC_BY_KIND.get(kind)
    if spec is None:
        raise ValueError(f"unknown event kind '{kind}'{_closest(kind, SPEC_BY_KIND)}")
    values = {p.name: p.default for p in spec.params}
    seen: set[str] = set()
    for i, word in enumerate(words[1:]):
        key, eq, val = word.partition("=")
        if not eq:
            if i != 0 or not spec.params or not spec.params[0].positional:
                raise ValueError(f"'{word}' is not name=value (comments start with '{COMMENT}')")
            param, val = spec.params[0], word
        else:
            try:
                param = spec.params[spec.index(key)]
            except KeyError:
                names = [p.name for p in spec.params]
                raise ValueError(
                    f"{kind} has no parameter '{key}'{_closest(key, names)}; it takes: {', '.join(names) or 'nothing'}"
                ) from None
        if param.name in seen:
            raise ValueError(f"{param.name} given twice")
        seen.add(param.name)
        values[param.name] = parse_value(param, val)
    ev = Event(kind, tuple(values[p.name] for p in spec.params))
    if kind == "l0.emulate" and ev.args[0] in EMULATOR_NEVER_RAISES:
        raise ValueError(f"KVM's emulator never raises {mnemonic(ev.args[0])}: it performs INT3 / INTO itself "
                         "in real mode and gives up in other modes (emulate_int); for the guest's own, write "
                         f"{SOFT_EXCEPTION_KINDS[ev.args[0]]}")
    canon = normalise(ev)
    if "ec" in seen and canon["ec"] != values["ec"]:
        vec = ev.args[0]
        if vec is None:
            raise ValueError("ec= given but no fault= to carry it")
        if vec in FIXED_ERROR_CODES:
            raise ValueError(f"{mnemonic(vec)}'s error code is always {FIXED_ERROR_CODES[vec]:#x} "
                             f"(SDM 6.15, Table 6-1); ec={values['ec']:#x} is not one a CPU pushes")
        raise ValueError(f"ec= given but {mnemonic(vec)} pushes no error code")
    if "cr2" in seen and canon["cr2"] != values["cr2"]:
        raise ValueError("cr2= is only for #PF")
    if kind == "l1.vmentry" and config is not None and config.vendor == "svm" and svm_vmentry(canon) != canon:
        raise ValueError("on SVM, interruptibility= sets the one INTERRUPT_SHADOW bit (write sti); pending_dbg= "
                         "and activity= are VMX's fields (leave them out): the VMCB has no activity-state field "
                         "(APM Table B-2), VMRUN always resumes the guest active")
    foreign = foreign_controls(config, canon) if config is not None else []
    if foreign:
        raise ValueError(f"{', '.join(f + '=1' for f in foreign)} is not a {config.vendor} control "
                         f"(only {VENDOR_CONTROLS[foreign[0]]} has it)")
    if "injected" in seen and config is not None and pending_exception_unsettable(config, canon):
        raise ValueError(f"injected=0 (a pending exception) needs caps={EXCEPTION_PAYLOAD} in the header: "
                         "without it KVM_SET_VCPU_EVENTS sets only injected exceptions")
    return canon


def parse_scenario(text: str, path: str = "<string>") -> Scenario:
    config: Config | None = None
    description: list[str] = []
    events: list[Event] = []
    text = text.removeprefix("\ufeff")  # a UTF-8 byte-order mark, as some editors write
    for lineno, raw in enumerate(text.splitlines(), 1):
        body, _, comment = raw.partition(COMMENT)
        body = body.strip()
        if not body:
            if config is None and comment:
                description.append(comment.strip())
            continue
        try:
            if config is None:
                config = _parse_header(body.split())
            elif len(events) == MAX_TEXT_EVENTS:
                raise ValueError(f"more than {MAX_TEXT_EVENTS:,} events, the limit of a scenario")
            else:
                events.append(parse_event_line(body, config))
        except ValueError as e:
            raise ScenarioError(str(e), path, lineno) from None
    if config is None:
        raise ScenarioError(f"no header line '{HEADER} vendor=...'", path, max(1, len(text.splitlines())))
    return Scenario(config, tuple(events), "\n".join(description))


def read_scenario(path: str | Path) -> Scenario:
    """Read a text scenario of at most `MAX_TEXT_BYTES` (UTF-8, with or
    without a byte-order mark)."""
    p = Path(path)
    with open(p, "rb") as f:
        data = f.read(MAX_TEXT_BYTES + 1)
    if len(data) > MAX_TEXT_BYTES:
        raise EvdiffError(f"{p}: more than {MAX_TEXT_BYTES >> 20} MiB, the limit of a text scenario")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise ScenarioError(f"byte {data[e.start]:#04x} is not UTF-8 text (binary inputs: use a .bin name)",
                            str(p), line) from None
    return parse_scenario(text, str(p))


#: Kinds whose vector is written as a number, never a mnemonic: `int 0x3` is
#: INT n on vector 3 (CD 03), a software interrupt, which `int #BP` would
#: misread as INT3 (CC), the `int3` kind (SDM 25.2, footnote on INT1 / INT3).
NUMERIC_VECTOR_KINDS = frozenset({"int"})


def format_event(ev: Event) -> str:
    spec = ev.spec
    words = [ev.kind]
    for i, (param, value) in enumerate(zip(spec.params, ev.args)):
        if i == 0 and param.positional:
            if ev.kind in NUMERIC_VECTOR_KINDS:
                words.append(f"{value:#x}")
            elif value is not None:
                words.append(format_value(param, value))
            continue
        if value != param.default:
            words.append(f"{param.name}={format_value(param, value)}")
    return " ".join(words)


def format_header(config: Config) -> str:
    paging = "ept" if config.vendor == "vmx" else "npt"
    words = [HEADER, f"vendor={config.vendor}", f"{paging}={'on' if config.npt else 'off'}"]
    if config.caps:
        words.append("caps=" + ",".join(c for c in CAPS if c in config.caps))
    return " ".join(words)


def format_scenario(scenario: Scenario, with_description: bool = True) -> str:
    lines = []
    if with_description and scenario.description:
        lines += [f"{COMMENT} {d}".rstrip() for d in scenario.description.splitlines()]
    lines.append(format_header(scenario.config))
    lines += [format_event(e) for e in scenario.events]
    return "\n".join(lines) + "\n"
