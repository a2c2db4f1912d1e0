"""Where benchmark data comes from: files the package ships, and the bench data folder.

Nothing is downloaded. The data folder (TREC questions, LongBench v2 code items) is, in order:
the ``--data-dir`` option, the ``RECURSA_BENCH_DATA`` environment variable, or a ``shared/data``
folder beside the checkout recursa runs from (``<checkout>/../shared/data``) or beside the
current directory.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

from recursa.errors import ConfigError

__all__ = [
    "TREC_LABELS",
    "TrecQuestion",
    "find_data_dir",
    "load_trec",
    "prose_paragraphs",
    "require_data",
]

DATA_ENV = "RECURSA_BENCH_DATA"

# TREC coarse classes as OOLONG names them.
TREC_LABELS: dict[str, str] = {
    "ABBR": "abbreviation",
    "ENTY": "entity",
    "DESC": "description and abstract concept",
    "HUM": "human being",
    "LOC": "location",
    "NUM": "numeric value",
}


def _candidates(env: Mapping[str, str]) -> list[Path]:
    here = Path(__file__).resolve()
    out = []
    # An editable install: src/recursa/bench/data.py -> <checkout>/.. /shared/data
    if len(here.parents) > 4:
        out.append(here.parents[4] / "shared" / "data")
    out.append(Path.cwd().parent / "shared" / "data")
    out.append(Path.cwd() / "shared" / "data")
    return out


def find_data_dir(
    option: str | Path | None = None, env: Mapping[str, str] | None = None
) -> Path | None:
    """The bench data folder, or ``None`` when none is configured or found.

    An explicitly named folder (option or environment) that does not exist is an error.
    """
    env = os.environ if env is None else env
    named = option or env.get(DATA_ENV)
    if named:
        path = Path(named).expanduser()
        if not path.is_dir():
            source = "--data-dir" if option else DATA_ENV
            raise ConfigError(f"{source}: {path} is not a folder")
        return path
    for path in _candidates(env):
        if path.is_dir():
            return path
    return None


def require_data(data_dir: Path | None, relative: str, benchmark: str) -> Path:
    """``data_dir / relative``, or a ConfigError that says how to provide it."""
    if data_dir is None:
        raise ConfigError(
            f"the {benchmark} benchmark reads {relative} from the bench data folder, and none "
            f"was found: pass --data-dir DIR or set {DATA_ENV}"
        )
    path = data_dir / relative
    if not path.exists():
        raise ConfigError(
            f"the {benchmark} benchmark needs {path}, which does not exist: pass --data-dir "
            f"with the folder that holds {relative} (or set {DATA_ENV})"
        )
    return path


@cache
def prose_paragraphs() -> tuple[str, ...]:
    """The paragraphs of the shipped public-domain prose (The Devil's Dictionary, 1911)."""
    blob = resources.files("recursa.bench").joinpath("data/devils_dictionary.txt.gz").read_bytes()
    text = gzip.decompress(blob).decode("utf-8")
    return tuple(p for p in text.split("\n\n") if p.strip())


@dataclass(frozen=True, slots=True)
class TrecQuestion:
    label: str  # one of TREC_LABELS' values
    fine: str  # the fine class (e.g. "city"), kept for generators that want it
    text: str


def load_trec(path: Path) -> tuple[TrecQuestion, ...]:
    """Parse ``train_5500.label`` lines: ``COARSE:fine question text``."""
    return _load_trec(str(path))


@cache
def _load_trec(path: str) -> tuple[TrecQuestion, ...]:
    out: list[TrecQuestion] = []
    raw = Path(path).read_bytes().decode("latin-1")  # the file has a few non-UTF-8 bytes
    for n, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        head, _, text = line.partition(" ")
        coarse, _, fine = head.partition(":")
        if coarse not in TREC_LABELS or not text.strip():
            raise ConfigError(f"{path}:{n}: not a TREC line (COARSE:fine question)")
        out.append(TrecQuestion(TREC_LABELS[coarse], fine, " ".join(text.split())))
    if not out:
        raise ConfigError(f"{path} holds no TREC questions")
    return tuple(out)
