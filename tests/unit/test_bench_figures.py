"""bench.figures: a figure's ratio reads the same way whichever direction is better (≥ 1 means the target is met)."""

from __future__ import annotations

import pytest

from bench.figures import Figure, render_table


def test_higher_is_better_ratio_is_value_over_target() -> None:
    fig = Figure("end to end / ceiling", 0.25, "× ceiling", 0.5)
    assert fig.ratio == pytest.approx(0.5)
    assert fig.met is False
    assert Figure("x", 0.6, "", 0.5).met is True
    assert Figure("x", 0.5, "", 0.5).met is True  # exactly on target counts as met


def test_lower_is_better_ratio_is_target_over_value() -> None:
    fig = Figure("help", 0.5, "s", 0.25, "lower")
    assert fig.ratio == pytest.approx(0.5)
    assert fig.met is False
    fast = Figure("help", 0.2, "s", 0.25, "lower")
    assert fast.ratio == pytest.approx(1.25)
    assert fast.met is True


def test_no_value_or_no_target_has_no_ratio() -> None:
    assert Figure("x", None, "", 1.0).ratio is None
    assert Figure("x", 3.0, "").ratio is None
    assert Figure("x", 3.0, "", 0.0).ratio is None
    assert Figure("x", 0.0, "s", 1.0, "lower").ratio is None
    assert Figure("x", None, "", 1.0).met is None


def test_as_dict_and_table_show_ratio_and_met() -> None:
    figs = [Figure("rewards/s", 0.6, "× ceiling", 0.5, note="ok"), Figure("rss", 1.2, "×", 1.1, "lower"),
            Figure("peak", 100.0, "MB")]
    assert figs[0].as_dict()["met"] is True and figs[1].as_dict()["met"] is False
    lines = render_table(figs).splitlines()
    assert lines[0].split()[:6] == ["figure", "value", "unit", "target", "ratio", "met"]
    assert "≥ 0.500" in lines[1] and "1.20" in lines[1] and "yes" in lines[1] and lines[1].endswith("ok")
    assert "≤ 1.10" in lines[2] and "0.92" in lines[2] and "NO" in lines[2]
    assert lines[3].split()[-3:] == ["-", "-", "-"]
