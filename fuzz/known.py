"""Known divergences: signatures a developer has already read, with the reason.

`corpus/known-divergences.txt` (or `evdiff fuzz --known FILE`) holds one
entry a line, `SIGNATURE ## REASON`; `#` followed by a space starts a
comment line (signatures contain `#PF`, never `##`).  Known findings are still
recorded and counted; the campaign's summary lists them apart, with their
reason, after what is new, so a morning's reading starts with what nobody
has explained yet.  Nothing is hidden.
"""
from __future__ import annotations

from pathlib import Path

from fuzz import corpus_path
from fuzz.scenario import EvdiffError

KNOWN = corpus_path("known-divergences.txt")
SEP = " ## "


def load(path: Path | None = KNOWN) -> dict[str, str]:
    """signature -> reason.  A missing default file is an empty list; a
    malformed line is an error naming FILE:LINE."""
    if path is None or (path == KNOWN and not path.exists()):
        return {}
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise EvdiffError(f"{path}: {e.strerror}") from None
    out: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("# ") or line.strip() == "#":
            continue
        sig, sep, reason = line.partition(SEP)
        if not sep or not sig.strip() or not reason.strip():
            raise EvdiffError(f"{path}:{n}: expected 'SIGNATURE{SEP}REASON'")
        if sig.strip() in out:
            raise EvdiffError(f"{path}:{n}: signature listed twice")
        out[sig.strip()] = reason.strip()
    return out
