"""S-NIAH: one value hidden under a key at a chosen depth of a long haystack (as RULER's
``niah_single_*``), plus a variant where grep alone is not enough.

- ``niah``: real prose (The Devil's Dictionary, public domain, shipped), a 7-digit number.
- ``niah-filler``: RULER's repeated filler sentences, a 7-digit number.
- ``niah-uuid``: real prose, a UUID.
- ``niah-synonyms``: real prose, a 7-digit number, and 20-50 distractor needles of the same
  form under other keys; the question names the key by a synonym ("automobile" for the needle
  stored under "car"), so finding the needles is easy and choosing among them needs meaning.

All tasks of one length share one haystack (only the needles differ) and come in order of
decreasing depth, so a model server's prefix cache can reuse the text before the needle.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Sequence
from pathlib import Path

from recursa.bench.data import prose_paragraphs
from recursa.bench.tasks import (
    Benchmark,
    GenerateFn,
    Task,
    length_label,
    register,
    target_chars,
)

__all__ = ["FILLER", "SYNONYMS", "niah_tasks"]


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


NEEDLE = "One of the special magic {kind}s for {key} is: {value}."
QUESTION = (
    "What is the special magic {kind} for {key} mentioned in the provided text? "
    "Answer with the {kind} only."
)
FILLER = (
    "The grass is green.",
    "The sky is blue.",
    "The sun is yellow.",
    "Here we go.",
    "There and back again.",
)

_ADJECTIVES = _words(
    "amber quiet brisk hollow gentle rapid silent crooked golden humble jagged lively "
    "mellow narrow polished rustic scarlet tender vivid wandering ancient bitter calm "
    "dusty eager fragile gloomy hidden icy jolly kindred lofty misty noble olive patient"
)
_NOUNS = _words(
    "harbor lantern meadow orchard pebble quarry ribbon saddle thimble valley willow "
    "anchor beacon canyon drizzle ember falcon glacier hammock island jasmine kettle "
    "lagoon mirror nectar oyster parrot quill raven spindle tundra umbrella violet walnut "
    "yarrow zephyr"
)

# (word stored in the needle, synonym used in the question); every row is a distinct meaning.
SYNONYMS: tuple[tuple[str, str], ...] = tuple(
    (a, b)
    for a, _, b in (
        p.partition("/")
        for p in _words(
            "car/automobile physician/doctor sofa/couch boat/vessel house/dwelling river/stream "
            "hill/mound lawyer/attorney thief/burglar child/youngster gift/present road/highway "
            "shop/store dish/plate jacket/coat stone/rock student/pupil teacher/instructor "
            "forest/woodland ocean/sea garbage/trash cemetery/graveyard baby/infant bucket/pail "
            "chef/cook fiddle/violin rabbit/bunny pants/trousers purse/handbag attic/loft "
            "sailor/mariner murderer/killer photograph/picture autumn/fall ghost/phantom "
            "king/monarch drug/medicine funds/money pond/pool spouse/partner evening/dusk "
            "voyage/journey rug/carpet tale/story error/mistake freedom/liberty hazard/danger "
            "insect/bug pistol/handgun riddle/puzzle shore/coast smell/odor target/goal "
            "vacation/holiday wizard/sorcerer"
        )
    )
)

# name -> (haystack, needle kind, range of distractor needles or None)
_VARIANTS: dict[str, tuple[str, str, tuple[int, int] | None]] = {
    "niah": ("prose", "number", None),
    "niah-filler": ("filler", "number", None),
    "niah-uuid": ("prose", "uuid", None),
    "niah-synonyms": ("prose", "number", (20, 50)),
}


def _units(haystack: str, chars: int) -> tuple[list[str], str]:
    """The haystack's pieces (paragraphs or sentences) making about ``chars``, and their joiner."""
    source: Sequence[str] = prose_paragraphs() if haystack == "prose" else FILLER
    joiner = "\n\n" if haystack == "prose" else " "
    out: list[str] = []
    total, i = 0, 0
    while total < chars:
        piece = source[i % len(source)]
        out.append(piece)
        total += len(piece) + len(joiner)
        i += 1
    return out, joiner


def _value(rng: random.Random, kind: str) -> str:
    if kind == "uuid":
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))
    return str(rng.randint(1_000_000, 9_999_999))


def _keys(rng: random.Random, n: int) -> list[str]:
    pool = [f"{a}-{b}" for a in _ADJECTIVES for b in _NOUNS]
    return rng.sample(pool, n)


def _insert(units: list[str], joiner: str, needles: list[tuple[float, str]]) -> str:
    """Put each needle at its depth (0..1) between two pieces of the haystack."""
    out = list(units)
    # Deepest first, so earlier insertions do not move the later positions.
    for depth, needle in sorted(needles, key=lambda x: -x[0]):
        out.insert(round(depth * len(units)), needle)
    return joiner.join(out)


def _depths(n: int) -> list[float]:
    if n == 1:
        return [0.5]
    return [1 - i / (n - 1) for i in range(n)]  # 100% ... 0%: decreasing (see module doc)


def niah_tasks(benchmark: str, length: int, n: int, seed: int) -> list[Task]:
    """``n`` tasks of S-NIAH variant ``benchmark`` with about ``length`` tokens each."""
    haystack, kind, distractors = _VARIANTS[benchmark]
    label = length_label(length)
    rng = random.Random(f"{benchmark}:{length}:{seed}")
    # Room for the needles (their mean number), so a context is about ``length`` tokens.
    count = 1 + (sum(distractors) // 2 if distractors else 0)
    needle_chars = count * len(NEEDLE.format(kind=kind, key="x" * 12, value=_value(rng, kind)))
    units, joiner = _units(haystack, max(1, target_chars(length) - needle_chars))
    tasks = []
    for i, depth in enumerate(_depths(n)):
        value = _value(rng, kind)
        needles: list[tuple[float, str]]
        if distractors:
            pairs = rng.sample(SYNONYMS, min(len(SYNONYMS), rng.randint(*distractors) + 1))
            (key, asked), others = pairs[0], pairs[1:]
            needles = [(depth, NEEDLE.format(kind=kind, key=key, value=value))]
            needles += [
                (rng.random(), NEEDLE.format(kind=kind, key=k, value=_value(rng, kind)))
                for k, _ in others
            ]
        else:
            key = asked = _keys(rng, 1)[0]
            needles = [(depth, NEEDLE.format(kind=kind, key=key, value=value))]
        question = QUESTION.format(kind=kind, key=asked)
        tasks.append(
            Task(
                benchmark=benchmark,
                task_id=f"{benchmark}-{label}-s{seed}-{i:03d}",
                length=length,
                question=question,
                context=_insert(units, joiner, needles),
                gold=value,
                scoring="values",
                window=f"{benchmark}-{label}-s{seed}",
                query=f"special magic {kind} for {asked}",
                meta={
                    "depth": round(depth, 4),
                    "key": key,
                    "asked": asked,
                    "needles": len(needles),
                },
            )
        )
    return tasks


def _generator(name: str) -> GenerateFn:
    def generate(length: int, n: int, seed: int, data_dir: Path | None) -> list[Task]:
        return niah_tasks(name, length, n, seed)

    return generate


_DESCRIPTIONS = {
    "niah": "S-NIAH: a 7-digit number in public-domain prose (RULER niah_single_2)",
    "niah-filler": "S-NIAH: a 7-digit number in repeated filler sentences (niah_single_1)",
    "niah-uuid": "S-NIAH: a UUID in public-domain prose (niah_single_3)",
    "niah-synonyms": "S-NIAH with 20-50 distractor needles; the question uses a synonym of the key",
}
for _name, _description in _DESCRIPTIONS.items():
    register(Benchmark(_name, _description, _generator(_name)))
