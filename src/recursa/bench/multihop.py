"""Multi-hop questions over a generated collection of fictional documents (BrowseComp-Plus-like).

A seeded *world* of countries, cities, people, organisations and events becomes a collection of
1,000 documents, one per entity (about 5M approximate tokens in all): each states its entity's
facts in a few sentences, buried in paragraphs of archival filler that mention other entities
in passing (so a name alone finds many documents).

Questions start from an event described by paraphrased constraints (a synonym of its kind, a
period such as "the late 1980s" for 1987, its organiser) and follow 2-4 hops:

- 2 hops: the winner's birth city (event -> winner);
- 3 hops: the organisation the winner's mentor works for (event -> winner -> mentor);
- 4 hops: the country where the winner's mentor was born (event -> winner -> mentor -> city).

The descriptor is checked to match exactly one event, and events that meet all but one
constraint (hard negatives) are kept in the collection, so the answer is unique by construction.
A task of ``length`` tokens gets the documents it needs, its hard negatives and random others
up to that size; a length above the collection's size gets the whole collection.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TypedDict

from recursa.bench.tasks import Benchmark, Task, length_label, register, target_chars
from recursa.limits import approx_tokens

__all__ = ["Event", "Org", "Person", "World", "build_world"]


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


N_DOCS = 1000
_KINDS = (
    ("chess tournament", "chess championship"),
    ("regatta", "rowing race"),
    ("harvest fair", "agricultural show"),
    ("poetry contest", "verse competition"),
    ("marathon", "long-distance footrace"),
    ("science fair", "research exhibition"),
    ("film festival", "cinema showcase"),
    ("cook-off", "culinary contest"),
)
_PROFESSIONS = _words("cartographer physician architect lawyer shipwright astronomer glassblower")
_SYL = _words(
    "ka lo ren vi tha mor el san dra qu ix bel cor fen gal hal ith jor lun mer nov ost pel"
)
_ORG_A = _words(
    "Bright Northern Silver Granite Hollow Crimson Eastern Iron Amber Quiet Royal Lantern"
)
_ORG_B = _words("Anvil Compass Harbor Ledger Orchard Beacon Loom Meridian Quarry Tide Forge Atlas")
_ORG_C = _words("Foundry Guild Society Company Trust Institute Works Collective")
_CITY_END = _words("gate haven ford mere wick holm stead bury crest fall")
_TOPICS = (
    "the price of grain",
    "an old boundary dispute",
    "the repair of the river wall",
    "a winter that closed the roads",
    "the rebuilding of the market hall",
    "a quarrel over fishing rights",
    "the first printed street map",
    "a failed canal scheme",
    "the arrival of the telegraph",
    "a long drought",
)
_FILLER = (
    "Local records from {year} mention {person} only in passing, next to a note about {topic}.",
    "The archive in {city} keeps {n} letters about {topic}, most of them undated.",
    "A pamphlet printed for {org} discusses {topic} at length, though few copies survive.",
    "Visitors to {city} in {year} wrote mostly about {topic}.",
    "Historians disagree about how much {person} knew of {topic}.",
    "An inventory from {year} lists {n} crates that belonged to {org}.",
    "Newspapers in {country} reported on {topic} for several weeks.",
    "A later account describes {topic} in some detail, and mentions {person} once.",
    "Some of the surviving drawings show {city} as it looked around {year}.",
    "The minutes of a meeting held by {org} record a long debate on {topic}.",
)


class Person(TypedDict):
    born: int
    city: str
    job: str
    org: str
    mentor: str


class Org(TypedDict):
    founded: int
    city: str


class Event(TypedDict):
    kind: int  # index into _KINDS
    year: int
    city: str
    org: str
    winner: str


@dataclass
class World:
    countries: list[str] = field(default_factory=list)
    cities: dict[str, str] = field(default_factory=dict)  # city -> country
    people: dict[str, Person] = field(default_factory=dict)
    orgs: dict[str, Org] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    docs: dict[str, str] = field(default_factory=dict)  # doc id -> text
    doc_of: dict[str, str] = field(default_factory=dict)  # entity -> doc id


def _name(rng: random.Random, parts: int) -> str:
    return "".join(rng.choice(_SYL) for _ in range(parts)).capitalize()


def _unique(rng: random.Random, make: Callable[[random.Random], str], n: int) -> list[str]:
    seen: dict[str, None] = {}
    while len(seen) < n:
        seen.setdefault(make(rng), None)
    return list(seen)


def _entities(rng: random.Random, w: World) -> None:
    w.countries = _unique(rng, lambda r: _name(r, 2) + r.choice(["ia", "and", "or", "ene"]), 12)
    cities = _unique(rng, lambda r: _name(r, 2) + r.choice(_CITY_END), 150)
    w.cities = {c: rng.choice(w.countries) for c in cities}
    orgs = _unique(rng, lambda r: f"{r.choice(_ORG_A)} {r.choice(_ORG_B)} {r.choice(_ORG_C)}", 200)
    w.orgs = {o: {"founded": rng.randint(1850, 1960), "city": rng.choice(cities)} for o in orgs}
    people = _unique(rng, lambda r: f"{_name(r, 2)} {_name(r, 3)}", 300)
    for p in people:
        w.people[p] = {
            "born": rng.randint(1900, 1975),
            "city": rng.choice(cities),
            "job": rng.choice(_PROFESSIONS),
            "org": rng.choice(orgs),
            "mentor": "",  # drawn below, once everyone exists
        }
    for i, p in enumerate(people):
        w.people[p]["mentor"] = people[(i + rng.randint(1, len(people) - 1)) % len(people)]
    n_events = N_DOCS - len(w.countries) - len(cities) - len(orgs) - len(people)
    for _ in range(n_events):
        kind = rng.randrange(len(_KINDS))
        w.events.append(
            {
                "kind": kind,
                "year": rng.randint(1950, 1999),
                "city": rng.choice(cities),
                "org": rng.choice(orgs),
                "winner": rng.choice(people),
            }
        )


def _filler(rng: random.Random, w: World, chars: int, people: list[str], orgs: list[str]) -> str:
    cities = list(w.cities)
    out, size = [], 0
    while size < chars:
        sentences = []
        for _ in range(rng.randint(3, 6)):
            sentences.append(
                rng.choice(_FILLER).format(
                    year=rng.randint(1850, 2000),
                    person=rng.choice(people),
                    topic=rng.choice(_TOPICS),
                    city=rng.choice(cities),
                    org=rng.choice(orgs),
                    country=rng.choice(w.countries),
                    n=rng.randint(2, 90),
                )
            )
        para = " ".join(sentences)
        out.append(para)
        size += len(para) + 2
    return "\n\n".join(out)


def _event_title(e: Event) -> str:
    return f"The {e['year']} {_KINDS[e['kind']][0]} in {e['city']}"


def _facts(w: World) -> list[tuple[str, str, str]]:
    """``(entity, title, fact sentences)`` for every document."""
    out = []
    for c in w.countries:
        capital = next((k for k, v in w.cities.items() if v == c), "")
        out.append((c, c, f"{c} is a country whose largest city is {capital}."))
    for city, country in w.cities.items():
        out.append((city, city, f"{city} is a city in {country}."))
    for o, org in w.orgs.items():
        text = f"{o} was founded in {org['founded']}. Its headquarters are in {org['city']}."
        out.append((o, o, text))
    for p, d in w.people.items():
        text = (
            f"{p} was born in {d['city']} in {d['born']}. {p} worked as a {d['job']} for "
            f"{d['org']}. As a young {d['job']}, {p} was trained by {d['mentor']}, who remained "
            f"{p}'s mentor for many years."
        )
        out.append((p, p, text))
    for i, e in enumerate(w.events):
        text = (
            f"{_event_title(e)} was organised by {e['org']}. The winner was {e['winner']}, "
            "who was cheered by a large crowd."
        )
        out.append((f"event:{i}", _event_title(e), text))
    return out


@cache
def build_world(seed: int) -> World:
    """The collection for ``seed`` (about 5M approximate tokens; built once per process)."""
    rng = random.Random(f"multihop-world:{seed}")
    w = World()
    _entities(rng, w)
    people, orgs = list(w.people), list(w.orgs)
    facts = _facts(w)
    rng.shuffle(facts)  # document ids say nothing about what a document is
    for i, (entity, title, text) in enumerate(facts):
        size = int(math.exp(rng.uniform(math.log(1500), math.log(12000)))) * 4  # chars
        filler = _filler(rng, w, size, people, orgs)
        paras = filler.split("\n\n")
        paras.insert(rng.randrange(len(paras) + 1), text)  # the facts sit somewhere inside
        doc_id = f"doc{i:04d}"
        w.docs[doc_id] = f"# {title}\n\n" + "\n\n".join(paras)
        w.doc_of[entity] = doc_id
    return w


def _period(year: int) -> str:
    part = year % 10
    word = "early" if part <= 3 else "mid" if part <= 6 else "late"
    return f"the {word} {year - part}s"


def _matches(e: Event, kind: int, period: str, org: str) -> int:
    """How many of the three descriptor constraints event ``e`` meets."""
    return (e["kind"] == kind) + (_period(e["year"]) == period) + (e["org"] == org)


@dataclass(frozen=True)
class _Question:
    hops: int
    text: str
    gold: list[str]
    needed: list[str]  # entities whose documents hold the evidence
    negatives: list[str]


def _question(w: World, rng: random.Random, hops: int) -> _Question | None:
    i = rng.randrange(len(w.events))
    e = w.events[i]
    period = _period(e["year"])
    same = [j for j, x in enumerate(w.events) if _matches(x, e["kind"], period, e["org"]) == 3]
    if same != [i]:
        return None  # the descriptor must pick out one event
    near = [j for j, x in enumerate(w.events) if _matches(x, e["kind"], period, e["org"]) == 2]
    if not near:
        return None  # no hard negative: too easy
    desc = f"the {_KINDS[e['kind']][1]} organised by {e['org']} in {period}"
    winner = e["winner"]
    mentor = w.people[winner]["mentor"]
    needed = [f"event:{i}", winner]
    if hops == 2:
        text, gold = f"In which city was the winner of {desc} born?", w.people[winner]["city"]
    elif hops == 3:
        text = f"Which organisation did the mentor of the winner of {desc} work for?"
        gold, needed = w.people[mentor]["org"], [*needed, mentor]
    else:
        city = w.people[mentor]["city"]
        text = f"In which country was the mentor of the winner of {desc} born?"
        gold, needed = w.cities[city], [*needed, mentor, city]
    text += " Answer with the name only."
    return _Question(hops, text, [gold], needed, [f"event:{j}" for j in near])


def _collection(w: World, q: _Question, length: int, rng: random.Random) -> dict[str, str]:
    budget = target_chars(length)
    chosen = [w.doc_of[x] for x in q.needed]
    size = sum(len(w.docs[d]) for d in chosen)
    extra = [w.doc_of[x] for x in q.negatives]
    others = [d for d in w.docs if d not in chosen and d not in extra]
    rng.shuffle(others)
    for d in extra + others:
        if size >= budget:
            break
        chosen.append(d)
        size += len(w.docs[d])
    return {d: w.docs[d] for d in sorted(chosen)}


def multihop_tasks(length: int, n: int, seed: int, data_dir: Path | None) -> list[Task]:
    w = build_world(seed)
    rng = random.Random(f"multihop-questions:{length}:{seed}")
    tasks: list[Task] = []
    seen: set[str] = set()
    attempts = 0
    while len(tasks) < n and attempts < 10_000:
        attempts += 1
        q = _question(w, rng, hops=2 + len(tasks) % 3)
        if q is None or q.text in seen:
            continue
        seen.add(q.text)
        docs = _collection(w, q, length, rng)
        chars = sum(len(v) for v in docs.values())
        tasks.append(
            Task(
                benchmark="multihop",
                task_id=f"multihop-{length_label(length)}-s{seed}-{len(tasks):03d}",
                length=length,
                question=q.text,
                context=docs,
                gold=q.gold,
                scoring="aliases",
                window=f"multihop-{length_label(length)}-s{seed}-{len(tasks):03d}",
                query=q.text,
                meta={"hops": q.hops, "docs": len(docs), "actual_tokens": approx_tokens(chars)},
            )
        )
    return tasks


register(
    Benchmark(
        "multihop",
        "2-4-hop questions over 1,000 generated fictional documents (BrowseComp-Plus-like)",
        multihop_tasks,
    )
)
