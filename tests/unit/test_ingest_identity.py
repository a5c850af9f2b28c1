"""Identity: normalised ids and an event key that encodes its parts unambiguously."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from payhub.errors import InvalidRecord
from payhub.pipeline.identity import event_key, malformed_key, normalise_id


def test_ordinary_keys_read_as_before() -> None:
    assert event_key("crm_export", "record", "006A000008", "deal_won") == "crm_export:record:006A000008:deal_won"
    assert event_key("salesforce", "Opportunity", "006A", "won:2026-05-01T10:00:00Z") == (
        "salesforce:Opportunity:006A:won:2026-05-01T10:00:00Z")


def test_parts_holding_the_separator_no_longer_collide() -> None:
    assert event_key("s", "record", "a:b", "won") == "s:record:a%3Ab:won"
    assert event_key("s", "record:a", "b", "won") == "s:record%3Aa:b:won"
    assert event_key("s", "x", "a%3Ab", "won") == "s:x:a%253Ab:won"
    assert event_key("s", "x", "a:b", "won") != event_key("s", "x", "a%3Ab", "won")
    assert event_key("a:b", "c", "d", "e") != event_key("a", "b:c", "d", "e")


part = st.text(alphabet=st.sampled_from("ab:%3A"), max_size=6)


@given(st.tuples(part, part, part, part), st.tuples(part, part, part, part))
def test_the_key_is_injective(one: tuple[str, str, str, str], other: tuple[str, str, str, str]) -> None:
    assert (event_key(*one) == event_key(*other)) == (one == other)


@given(part, st.text(max_size=20), st.tuples(part, part, part, part))
def test_a_content_key_never_equals_an_event_key(source: str, raw: str, parts: tuple[str, str, str, str]) -> None:
    assert malformed_key(source, raw) != event_key(*parts)
    assert malformed_key(source, raw).split(":")[0] == event_key(source, "t", "i", "w").split(":")[0]


@pytest.mark.parametrize(("value", "normal"), [
    ("\ufeff006A", "006A"), ("006A\u200b", "006A"), ("0\u200c0\u200d6\u2060A", "006A"), (" 006A\t", "006A"),
    ("cafe\u0301", "caf\u00e9"), ("\u212b", "\u00c5"), ("\u00a0x\u00a0", "x"), ("\ufeff", ""), ("a b", "a b"),
    ("\U0001f600", "\U0001f600"),
])
def test_ids_are_normalised(value: str, normal: str) -> None:
    assert normalise_id(value, "object id") == normal


@pytest.mark.parametrize("value", ["a\x00b", "a\tb", "a\u202eb", "a\u200eb", "a\u2028b", "a\ud800", "a\x85b",
                                   "a\U000e0041b"])
def test_ids_with_other_control_or_format_characters_are_refused(value: str) -> None:
    with pytest.raises(InvalidRecord, match=r"object id .* holds U\+[0-9A-F]{4,5}, a control, format or surrogate"):
        normalise_id(value, "object id")


def test_a_content_key_hashes_text_that_cannot_be_encoded() -> None:
    assert malformed_key("s", "\ud800") != malformed_key("s", "\udc00")
    assert malformed_key("a:b", "x").startswith("a%3Ab:malformed:")
