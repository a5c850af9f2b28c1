"""The cross-check's folds over driver rows record exactly what :mod:`payhub.audited`'s folds record."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from payhub import audited, crosscheck

PAYOUT_ACTIONS = ["payout.created", "payout.sending", "payout.sent", "payout.paid", "payout.rejected",
                  "payout.returned", "payout.failed", "payout.cancelled", "payout.held", "payout.released",
                  "payout.lookup", "payout.unknown", "payout.resolved", "payout.checked", "payout.weird"]
REWARD_ACTIONS = ["reward.calculated", "reward.approved", "reward.released", "reward.held", "reward.carried",
                  "reward.scheduled", "reward.cancelled", "reward.note"]
OUTCOMES = ["ok", "not_found", "unknown", "held"]


def _detail(rnd: random.Random, payouts: list[str]) -> Any:
    choice = rnd.random()
    if choice < 0.05:
        return rnd.choice(["not json", "[1, 2]", "", " {}", '{"a": 1} ', '{"a": 1}x', "null", "{", '"{}"', b'{"a": 2}',
                           7, None, '\ufeff{}', '{"a": NaN}'])
    value: dict[str, Any] = {}
    for name, values in (("amount", ["10.00", "12.5", "x", 3]), ("currency", ["EUR", "JPY", "??"]),
                         ("payee", ["p1", "p2"]), ("rail", ["bank", "card"]), ("key", ["k1", "k2"]),
                         ("rewards", [1, 2, "3"]), ("payout", [*payouts, None, 5, "None"]),
                         ("to", ["sent", "paid", "held", "pending", "bogus", 3]), ("status", ["pending", "held", 1]),
                         ("pending", [True, False])):
        if rnd.random() < 0.4:
            value[name] = rnd.choice(values)
    text = json.dumps(value, separators=(",", ":"), sort_keys=rnd.random() < 0.5)
    return text if rnd.random() < 0.9 else json.dumps(value, indent=1)


@pytest.mark.parametrize("seed", range(200))
def test_folds_record_what_the_reference_folds_record(seed: int) -> None:
    rnd = random.Random(seed)
    payouts = [str(n) for n in range(1, 5)]
    seqs = iter(rnd.sample(range(1, 10_000), 200))
    by_payout: dict[str, list[audited.AuditRow]] = {}
    for _ in range(rnd.randint(0, 40)):
        payout = rnd.choice(payouts)
        by_payout.setdefault(payout, []).append(audited.AuditRow(next(seqs), payout, rnd.choice(PAYOUT_ACTIONS),
                                                                 rnd.choice(OUTCOMES), _detail(rnd, payouts)))
    for rows in by_payout.values():
        rows.sort()
    own = sorted(audited.AuditRow(next(seqs), "9", rnd.choice(REWARD_ACTIONS), rnd.choice(OUTCOMES),
                                  _detail(rnd, payouts)) for _ in range(rnd.randint(0, 12)))
    raw = [(r.subject_id, r.seq, r.action, r.outcome, r.detail) for r in own]
    assert crosscheck.fold_reward("9", raw, crosscheck.reward_moves(
        [(r.subject_id, r.seq, r.action, r.outcome, r.detail) for rows in by_payout.values() for r in rows])) \
        == audited.fold_reward("9", own, by_payout)
    for payout, rows in by_payout.items():
        assert crosscheck.fold_payout(payout, [(r.subject_id, r.seq, r.action, r.outcome, r.detail) for r in rows]) \
            == audited.fold_payout(payout, rows)


def test_ranges_cover_every_id_once_within_one_length() -> None:
    ranges = list(crosscheck._ranges(12_345, 1000))
    assert [n for low, high in ranges for n in range(low, high + 1)] == list(range(1, 12_346))
    assert all(len(str(low)) == len(str(high)) and high - low < 1000 for low, high in ranges)
    assert list(crosscheck._ranges(0, 1000)) == []
