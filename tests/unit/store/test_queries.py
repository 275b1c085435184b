"""The regular expression a fuzzy name word becomes (run here by Python's re, whose syntax it shares)."""

from __future__ import annotations

import re

import pytest

from dicomflow.store.queries import _word_regex


@pytest.mark.parametrize(("word", "name", "matches"), [
    ("jo", "Doe^John", True),
    ("do", "Doe^John", True),
    ("ohn", "Doe^John", False),
    ("an", "Smith^Anna Marie", True),
    ("ma", "Smith^Anna Marie", True),
    ("山", "Yamada^Tarou=山田^太郎", True),
    ("j?hn", "Doe^John", True),
    ("*ohn", "Doe^John", True),         # a wildcard given by the client still works
    ("o.b", "Doe^Oxb", False),          # "." is a letter here, not "any"
    ("o.b", "Doe^O.Brien", True),
    ("(x", "Doe^(x)", True),
])
def test_a_word_begins_a_component(word: str, name: str, matches: bool) -> None:
    assert (re.search(_word_regex(word), name, re.IGNORECASE) is not None) is matches
