"""Flags are compared as :mod:`payhub.compliance.flags` normalises them, on both sides (the payees file and the
flag caps); a cap's flag that is empty once normalised, or holds a control character or a ``;``, is refused in
plain words."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from payhub.compliance.flags import flag_key
from payhub.errors import ConfigError
from payhub.payees import read_payees
from payhub.settings import load_settings
from payhub.store.gift_totals import flags_of

PROGRAM = '[programs.deals]\ncalculator = "flat"\namount = "1"\ncurrency = "USD"\n'


def cap_problems(tmp_path: Path, flag: str) -> list[tuple[str, str]]:
    path = tmp_path / "payhub.toml"
    path.write_text(PROGRAM + f'[[compliance.gifts.flag_caps]]\nflag = "{flag}"\namount = "100"\ncurrency = "USD"\n',
                    encoding="utf-8")
    try:
        load_settings(path)
    except ConfigError as exc:
        return exc.problems
    return []


@pytest.mark.parametrize("spelling", ["gov3", "GOV3", " gov3 ", "gov3\u200b", "\u200bgov3", "\ufeffgov3",
                                      "ｇｏｖ３", "Ｇｏｖ3\u200d", "gov\u20603"])
def test_every_spelling_of_a_flag_has_one_key(spelling: str) -> None:
    assert flag_key(spelling) == "gov3"


def test_payee_flags_from_the_file_and_the_registry_match_a_cap(tmp_path: Path) -> None:
    file = tmp_path / "payees.csv"
    file.write_text("id,name,flags\na,A,gov3\u200b\nb,B,ｇｏｖ３;Speaker\n", encoding="utf-8")
    rows, problems = read_payees(file)
    assert problems == []
    assert [row["flags"] for row in rows] == [["gov3"], ["Speaker", "gov3"]]
    # rows stored before normalisation are compared the same way when read back
    assert flags_of(json.dumps(["gov3\u200b", "ｇｏｖ３", "\u200b"])) == frozenset({"gov3"})


def test_a_cap_flag_is_cleaned_and_matches_the_payees(tmp_path: Path) -> None:
    path = tmp_path / "payhub.toml"
    path.write_text(PROGRAM + '[[compliance.gifts.flag_caps]]\nflag = "gov3\u200b"\namount = "1"\ncurrency = "USD"\n',
                    encoding="utf-8")
    assert load_settings(path).compliance.gifts.flag_caps[0].flag == "gov3"


@pytest.mark.parametrize(("flag", "words"), [
    ("\u200b", "is empty (once invisible characters and surrounding spaces are removed)"),
    ("  ", "is empty"),
    ("a;b", "contains ';', which separates flags in the payees file"),
    ("gov\\u0007", "contains control characters (U+0007)"),
    ("gov\\tx", "contains control characters (U+0009)"),
])
def test_a_bad_cap_flag_is_refused_in_plain_words(tmp_path: Path, flag: str, words: str) -> None:
    found = cap_problems(tmp_path, flag)
    assert [key for key, _ in found] == ["compliance.gifts.flag_caps.0.flag"]
    assert words in found[0][1] and "pattern" not in found[0][1]
