"""The erasure's matcher: a payee's values are found in any case, Unicode form or escape, identifiers with
separators, short and all-digit values only as whole tokens; JSON keeps its numbers and structure byte for byte."""

from __future__ import annotations

import json
import unicodedata

import pytest

from payhub.compliance.scrubber import Scrubber

NAME = "Zoë Quixote-Marchetti"
EMAIL = "zoe.quixote@example.org"
IBAN = "FR7630006000011234567890189"
TIN = "12-3456789"
BANK_CODE = "004"
PHONE = "+1 555 010 0199"
SHORT_ALIAS = "Zed"
SCRUBBER = Scrubber([NAME, EMAIL, IBAN, TIN, BANK_CODE, PHONE, SHORT_ALIAS, "ab"])


def every_char_escaped(value: str, upper: bool = False) -> str:
    text = "".join(f"\\u{ord(c):04x}" for c in value)
    return text.upper().replace("\\U", "\\u") if upper else text


def test_numbers_in_json_are_never_touched_and_the_json_stays_valid() -> None:
    text = '{"amount":1004.00,"bank":"004","ids":[1004,4004,"x 004"],"who":"Zoë Quixote-Marchetti"}'
    scrubbed = SCRUBBER.scrub(text)
    assert scrubbed == '{"amount":1004.00,"bank":"[erased]","ids":[1004,4004,"x [erased]"],"who":"[erased]"}'
    json.loads(scrubbed)


def test_json_lines_are_searched_line_by_line_and_keys_too() -> None:
    text = '{"a": 1004.00, "b": "Zed"}\n{"zoe.quixote@example.org": true}\n'
    assert SCRUBBER.scrub(text) == '{"a": 1004.00, "b": "[erased]"}\n{"[erased]": true}\n'


@pytest.mark.parametrize("escaped", [
    json.dumps(NAME),  # Python's default: \u00eb
    json.dumps(NAME).replace("\\u00eb", "\\u00EB"),  # Jackson's upper-case hexadecimal
    f'"{every_char_escaped(NAME)}"',
    f'"{every_char_escaped(NAME, upper=True)}"',
    '"zoe.quixote\\u0040example.org"',
    '"zoe\\u002equixote\\u0040EXAMPLE.org"',
    '"\\u005aed"',
])
def test_escaped_values_inside_json_are_found_and_the_json_stays_valid(escaped: str) -> None:
    text = '{"amount": 12.50, "contact": ' + escaped + ', "region": "west"}'
    scrubbed = SCRUBBER.scrub(text)
    assert scrubbed == '{"amount": 12.50, "contact": "[erased]", "region": "west"}'


@pytest.mark.parametrize("escaped", [
    "Zo\\u00ebquixote Marchetti", "ZO\\xcb QUIXOTE-MARCHETTI", every_char_escaped(EMAIL, upper=True),
    "Zo\\u0065\\u0308 Quixote-Marchetti",
])
def test_escaped_values_in_free_text_are_found(escaped: str) -> None:
    assert SCRUBBER.scrub(f"line 4: bad record ({escaped}) skipped") == "line 4: bad record ([erased]) skipped"


@pytest.mark.parametrize("pair", ["\\ud83d\\ude00", "\\uD83D\\uDE00"])
def test_characters_beyond_the_basic_plane_escaped_as_surrogate_pairs_are_found(pair: str) -> None:
    scrubber = Scrubber(["Ann \U0001F600 Lee"])
    assert scrubber.scrub('{"n": "Ann ' + pair + ' LEE", "x": 1}') == '{"n": "[erased]", "x": 1}'
    assert scrubber.scrub("Ann \\U0001f600 Lee!") == "[erased]!"


def test_json_text_inside_a_json_string_is_searched_too() -> None:
    inner = json.dumps({"name": NAME, "amount": 1004.00})
    text = json.dumps({"body": inner, "n": 1})
    scrubbed = SCRUBBER.scrub(text)
    assert scrubbed is not None
    assert json.loads(json.loads(scrubbed)["body"]) == {"name": "[erased]", "amount": 1004.00}


@pytest.mark.parametrize("spelling", [
    unicodedata.normalize("NFD", NAME), NAME.upper(), NAME.lower(), "Zoe Quixote Marchetti", "Zoë  Quixote - Marchetti",
    "Zo\u200bë Quixote-Marchetti", "ZOE.QUIXOTE@EXAMPLE.ORG", "ｚｏｅ．ｑｕｉｘｏｔｅ＠ｅｘａｍｐｌｅ．ｏｒｇ",
    "fr7630006000011234567890189", "FR76 3000 6000 0112 3456 7890 189", "fr76-3000-6000-0112-3456-7890-189",
    "123456789", "12 345 6789", "12/3456789", "+1 (555) 010-0199", "15550100199",
])
def test_other_spellings_are_found(spelling: str) -> None:
    assert SCRUBBER.scrub(f"refused: {spelling}; retry later") == "refused: [erased]; retry later"


@pytest.mark.parametrize("text", [
    "paid 1004.00 USD on 2004-01-05", "order 40041", "account 1004", "the Zedonk project", "Zeds", "abc", "a 1,004 b",
    "Quixote", "Zoë",  # a part of a name is not the name
])
def test_short_and_all_digit_values_match_only_as_whole_tokens(text: str) -> None:
    assert SCRUBBER.scrub(text) == text


def test_short_and_all_digit_values_match_as_whole_tokens() -> None:
    assert SCRUBBER.scrub("bank 004, contact Zed.") == "bank [erased], contact [erased]."
    assert SCRUBBER.scrub("ACC-004") == "ACC-[erased]"


def test_values_shorter_than_three_letters_or_digits_are_not_searched() -> None:
    assert SCRUBBER.scrub("ab ab") == "ab ab"
    assert not Scrubber(["ab", " ", "--"])
    assert Scrubber([]).scrub("anything") == "anything"


def test_text_that_only_looks_like_json_is_free_text() -> None:
    assert SCRUBBER.scrub('{"n": "Zed"') == '{"n": "[erased]"'  # not JSON: searched as free text
    assert SCRUBBER.scrub("123456789") == "[erased]"  # a JSON number, but not an object or array
    assert SCRUBBER.scrub(None) is None and SCRUBBER.scrub("") == ""


def test_a_nickname_nobody_gave_is_not_found() -> None:
    assert SCRUBBER.scrub("thanks Zoey") == "thanks Zoey"  # documented limit
