"""Personal values sealed with a per-payee key: readable while the key exists, gone for good once it is erased."""

from __future__ import annotations

from sqlalchemy import select, update

from payhub.compliance import personal
from payhub.db.schema import personal_keys


def seal(conn, subject: str, value: str) -> str:
    return personal.seal_with(personal.keys(conn, [subject], create=True)[subject], subject, value)


def test_seal_open_and_erase(make_runtime) -> None:
    rt = make_runtime("")
    with rt.engine.begin() as conn:
        sealed = seal(conn, "p:1", "Zoë Ångström")
        other = seal(conn, "p2", "Bob")
        assert sealed.startswith("pii:v1:p:1:") and "Zo" not in sealed
        assert seal(conn, "p:1", "Zoë Ångström") != sealed  # a fresh nonce each time
        assert personal.subject_of(sealed) == "p:1"
        assert personal.reveal(conn, {"a": [sealed, "plain"], "b": other, "n": 3}) == {
            "a": ["Zoë Ångström", "plain"], "b": "Bob", "n": 3}
        assert personal.erase_key(conn, "p:1") is True
        assert personal.erase_key(conn, "p:1") is False
        assert personal.reveal(conn, [sealed, other]) == [personal.ERASED, "Bob"]


def test_a_value_sealed_for_one_payee_does_not_open_as_another(make_runtime) -> None:
    rt = make_runtime("")
    with rt.engine.begin() as conn:
        sealed = seal(conn, "alice", "secret")
        seal(conn, "mallory", "x")
        forged = sealed.replace("pii:v1:alice:", "pii:v1:mallory:")  # the payee id is bound as associated data
        assert personal.reveal(conn, forged) == personal.ERASED
        tampered = sealed[:-4] + ("AAAA" if not sealed.endswith("AAAA") else "BBBB")
        assert personal.reveal(conn, tampered) == personal.ERASED


def test_keys_are_made_once_per_payee(make_runtime) -> None:
    rt = make_runtime("")
    with rt.engine.begin() as conn:
        first = personal.keys(conn, ["a", "b"], create=True)
        again = personal.keys(conn, ["a", "b", "c"], create=True)
        assert first["a"] == again["a"] and first["b"] == again["b"] and len(again["c"]) == 32
        assert personal.keys(conn, ["zzz"]) == {}
        assert conn.execute(select(personal_keys.c.subject).order_by(personal_keys.c.subject)).scalars().all() == [
            "a", "b", "c"]
        conn.execute(update(personal_keys).where(personal_keys.c.subject == "a").values(key="AAAA"))
        sealed = personal.seal_with(first["a"], "a", "v")
        assert personal.reveal(conn, sealed) == personal.ERASED  # a key changed outside payhub opens nothing


def test_keys_of_more_payees_than_one_in_list_holds(make_runtime) -> None:
    rt = make_runtime("")
    subjects = [f"p{i:04}" for i in range(1203)]
    with rt.engine.begin() as conn:
        made = personal.keys(conn, subjects, create=True)
        assert len(made) == 1203 and personal.keys(conn, subjects) == made
