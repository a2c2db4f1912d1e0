"""The bench scorers: S-NIAH values, OOLONG numbers and labels, pair F1, letters, aliases."""

from __future__ import annotations

import pytest

from recursa.bench.scoring import extract_choice, extract_pairs, final_part, normalize, score
from recursa.errors import ConfigError


def test_values_need_the_gold_and_nothing_else() -> None:
    assert score("values", "The special magic number is 1234567.", "1234567") == 1.0
    assert score("values", "1234567", "1234567") == 1.0
    assert score("values", "It is 7654321.", "1234567") == 0.0
    # Listing every candidate is not an answer.
    assert score("values", "1234567 or 7654321", "1234567") == 0.0
    assert score("values", "no idea", "1234567") == 0.0
    # An 8-digit number is not the 7-digit one inside it.
    assert score("values", "12345678", "1234567") == 0.0


def test_values_uuid() -> None:
    gold = "b353889c-987a-44ca-b318-268d067c9dc8"
    assert score("values", f"Answer: {gold.upper()}", gold) == 1.0
    assert score("values", "b353889c-987a-44ca-b318-268d067c9dc9", gold) == 0.0


def test_oolong_numbers_decay_with_the_error() -> None:
    assert score("oolong", "Answer: 12", 12) == 1.0
    assert score("oolong", "Answer: 10", 12) == pytest.approx(0.75**2)
    assert score("oolong", "I count 3 first, then... Answer: 1,200", 1200) == 1.0
    assert score("oolong", "Answer: many", 3) == 0.0


def test_oolong_labels_and_comparisons() -> None:
    assert score("oolong", "Answer: location", "location") == 1.0
    assert score("oolong", "Label: Numeric", "numeric value") == 1.0
    assert score("oolong", "Answer: description", "description and abstract concept") == 1.0
    # Two labels named: not an exact answer.
    assert score("oolong", "Answer: entity or location", "location") == 0.0
    assert score("oolong", "Answer: more common than", "more common than") == 1.0
    assert score("oolong", "Answer: less common", "less common than") == 1.0
    assert score("oolong", "Answer: same frequency as", "more common than") == 0.0


def test_final_part_takes_the_last_answer_line() -> None:
    assert final_part("Answer: 3 ... wait. Final answer: 4") == "4"
    assert final_part("just text") == "just text"


def test_pairs_f1() -> None:
    gold = [[1, 2], [1, 3], [2, 3]]
    assert score("pairs_f1", "(1, 2)\n(1, 3)\n(2, 3)", gold) == 1.0
    assert score("pairs_f1", "(2, 1)\n(3, 1)", gold) == pytest.approx(0.8)
    assert score("pairs_f1", "none", gold) == 0.0
    assert score("pairs_f1", "There are no such pairs.", []) == 1.0
    assert extract_pairs("(5,4) and 7, 9") == {(4, 5), (7, 9)}


def test_choice_letter() -> None:
    assert extract_choice("The correct answer is (B)") == "B"
    assert extract_choice("Answer: C") == "C"
    assert extract_choice("D. because") == "D"
    assert score("choice", "The correct answer is (A).", "A") == 1.0
    assert score("choice", "I think (C)", "A") == 0.0
    assert extract_choice("no letter here") is None


def test_aliases() -> None:
    aliases = ["json.decoder.JSONDecoder.decode", "JSONDecoder.decode", "decode"]
    assert score("aliases", "`json.decoder.JSONDecoder.decode`", aliases) == 1.0
    assert score("aliases", "The answer is decode().", aliases) == 1.0
    assert score("aliases", "Answer: Vimorford", ["Vimorford"]) == 1.0
    assert score("aliases", "Vimorford or Kalohaven", ["Vimorford"]) == 0.0
    assert normalize("The  Quick, brown!") == "quick brown"


def test_unknown_scorer() -> None:
    with pytest.raises(ConfigError, match="unknown scorer"):
        score("nope", "a", "b")
