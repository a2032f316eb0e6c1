"""evdiff's fuzzing side: the event language, the oracle, the command line."""
from pathlib import Path

_HERE = Path(__file__).resolve().parent


def corpus_path(*parts: str) -> Path:
    """A path in the project's `corpus/` (seeds, known divergences): in the
    source tree (or an editable install of it), else the copy shipped as
    package data in `fuzz/corpus` (`pip install .`; the symlink
    `fuzz/corpus -> ../corpus` is what the wheel copies)."""
    src = _HERE.parent.joinpath("corpus", *parts)
    return src if src.exists() else _HERE.joinpath("corpus", *parts)
