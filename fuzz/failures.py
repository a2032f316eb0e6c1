"""A divergence raised as an exception whose traceback follows its signature.

Engines that tell failures apart by where they were raised would otherwise
see one bug: Hypothesis keys a failure on the exception type and the file and
line that raised it; ClusterFuzz buckets a Python crash by the top three
frames of its traceback.  `raise_divergence` therefore raises from three
small functions made once per signature, whose names and file name carry the
signature's hash:

    File "<evdiff signature 3fa9c2b1d0e4>", line 2, in vmx_l1_3fa9c2b1d0e4
    File "<evdiff signature 3fa9c2b1d0e4>", line 4, in at_l1_vmentry_3fa9c2b1d0e4
    File "<evdiff signature 3fa9c2b1d0e4>", line 6, in divergence_3fa9c2b1d0e4
    fuzz.failures.DivergenceFound: vmx l1 @l1.vmentry [...]

so that distinct signatures are distinct failures and equal signatures one.
The exception carries the scenario's text, the signature and the
side-by-side table, so that the report is replayable with `evdiff replay`.
"""
from __future__ import annotations

import re

from fuzz.findings import signature_hash
from fuzz.scenario import EvdiffError
from fuzz.text import format_scenario


class DivergenceFound(EvdiffError):
    """Implementations disagree (or one crashed) on a scenario."""

    def __init__(self, report, divergence):
        self.report = report
        self.divergence = divergence
        self.signature = divergence.signature
        self.text = format_scenario(report.scenario, with_description=False)
        self._full: str | None = None
        super().__init__(divergence.signature)

    def __str__(self) -> str:
        # Built on demand: Hypothesis raises this on every failing call while it shrinks.
        if self._full is None:
            self._full = self._message()
        return self._full

    def _message(self) -> str:
        d = self.divergence
        lines = [d.signature, "", f"field {d.field}: expected {d.expected}"]
        lines += [f"  {name}: {got}" for name, got in d.got.items()]
        if d.verdicts:
            lines.append("verdicts: " + ", ".join(f"{p}: {v}" for p, v in d.verdicts.items()))
        lines += ["", "scenario (save as a .txt file, then `evdiff replay FILE` / `evdiff explain FILE`):", ""]
        lines += ["    " + line for line in self.text.splitlines()]
        try:
            from fuzz.explain import explain

            table = explain(self.report)
        except Exception as e:  # noqa: BLE001 -- the table is a convenience; the signature must get out
            table = f"(side-by-side table unavailable: {type(e).__name__}: {e})"
        return "\n".join(lines) + "\n\n" + table


_raisers: dict[str, object] = {}


def _ident(text: str) -> str:
    return re.sub(r"\W+", "_", text).strip("_")[:40] or "x"


def _raiser(divergence, vendor: str):
    h = signature_hash(divergence.signature)
    fn = _raisers.get(h)
    if fn is None:
        kind = divergence.signature.split(" @", 1)[1].split(" ", 1)[0] if " @" in divergence.signature else "any"
        outer, middle, inner = (f"{_ident(vendor + '_' + divergence.field)}_{h}", f"at_{_ident(kind)}_{h}",
                                f"divergence_{h}")
        source = (f"def {inner}(exc):\n    raise exc\n"
                  f"def {middle}(exc):\n    {inner}(exc)\n"
                  f"def {outer}(exc):\n    {middle}(exc)\n")
        namespace: dict = {}
        exec(compile(source, f"<evdiff signature {h}>", "exec"), namespace)  # noqa: S102 -- our own source
        fn = _raisers[h] = namespace[outer]
    return fn


def raise_divergence(report, divergence=None) -> None:
    """Raise `DivergenceFound` for one root cause of `report` (the first by
    default; `fuzz.causes`) from frames that follow its signature."""
    divergence = divergence or report.causes[0]
    _raiser(divergence, report.scenario.config.vendor)(DivergenceFound(report, divergence))
