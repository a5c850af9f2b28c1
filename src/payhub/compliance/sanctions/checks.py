"""The checks a newly read sanctions list must pass before it replaces the current version.

A list that reads without error can still be wrong: a format change that makes every row the wrong width, a
truncated download, an export with a date and no entries, a provider that returns an empty list. Screening against
it would clear everyone, so such a load is refused (the previous version stays current) when:

* it is dated more than :data:`MAX_DAYS_AHEAD` day after today (UTC): a date in the future would never grow
  older than ``max_list_age_days`` and so would switch that check off for good;
* it has no entries;
* more than ``max_skipped_share`` of the records read were skipped as unreadable;
* the file declares how many records it holds (OFAC XML ``Record_Count``) and holds another number;
* it has more than ``max_drop_share`` fewer entries than the current version, unless the admin accepts that drop
  for this list (``payhub screening refresh --accept-drop NAME``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

MAX_DAYS_AHEAD = 1
"""How many days after today (UTC) a list's date may be: a publisher in a time zone ahead of UTC may date its file
tomorrow; any later date is refused."""


@dataclass(frozen=True, slots=True)
class Counts:
    """What was read: entries kept, records read (skipped ones included), records skipped, and the number of
    records the file declares (None when its format declares none)."""

    entries: int
    records: int
    skipped: int = 0
    declared: int | None = None


def content_problem(counts: Counts, max_skipped_share: float) -> str | None:
    """Why the list as read cannot be used whatever the current version holds; None when it can."""
    if counts.declared is not None and counts.records != counts.declared:
        return (f"the file declares {counts.declared} records (Record_Count) but holds {counts.records}: "
                "truncated or altered")
    if counts.entries == 0:
        return (f"no entries ({counts.skipped} of {counts.records} records skipped)" if counts.records
                else "no entries")
    if counts.records and counts.skipped / counts.records > max_skipped_share:
        return (f"{counts.skipped} of {counts.records} records skipped ({counts.skipped / counts.records:.1%}), "
                f"more than max_skipped_share {max_skipped_share:g}: a format change or a damaged file")
    return None


def date_problem(published_on: date | None, today: date) -> str | None:
    """Why a list dated ``published_on`` cannot be used on ``today`` (a date more than :data:`MAX_DAYS_AHEAD` day
    ahead); None when it can."""
    if published_on is None or (published_on - today).days <= MAX_DAYS_AHEAD:
        return None
    return (f"dated {published_on.isoformat()}, {(published_on - today).days} days after today ({today.isoformat()}, "
            "UTC): a list from the future would never become stale; check the file and the clock")


def drop_share(current_entries: int, entries: int) -> float:
    """The share of the current version's entries the new load lacks (0 when it has as many or more)."""
    if current_entries <= 0 or entries >= current_entries:
        return 0.0
    return (current_entries - entries) / current_entries


def drop_problem(name: str, current_entries: int | None, entries: int, max_drop_share: float) -> str | None:
    """Why a load of ``entries`` entries may not replace a current version of ``current_entries`` (None: no
    current version, or the drop is within ``max_drop_share``)."""
    if current_entries is None:
        return None
    share = drop_share(current_entries, entries)
    if share <= max_drop_share:
        return None
    return (f"{entries} entries where the current version has {current_entries} ({share:.1%} fewer, more than "
            f"max_drop_share {max_drop_share:g}); if the list really shrank, load it with "
            f"`payhub screening refresh --accept-drop {name}`")


@dataclass(frozen=True, slots=True)
class Verdict:
    """A load's verdict: ``refusal`` (why it may not become current; None: it may), and ``accepted_drop`` (the
    share of entries dropped that the admin accepted, None when no drop beyond the limit was accepted)."""

    refusal: str | None = None
    accepted_drop: float | None = None


@dataclass(frozen=True, slots=True)
class Gate:
    """The checks of one load: what was read, the limits, and whether the admin accepts a drop for this list."""

    counts: Counts
    max_skipped_share: float
    max_drop_share: float
    accept_drop: bool = False

    def judge(self, name: str, current_entries: int | None, published_on: date | None = None,
              today: date | None = None) -> Verdict:
        """The verdict on loading list ``name``, dated ``published_on``, on ``today`` over a current version of
        ``current_entries`` (None: none)."""
        problem = date_problem(published_on, today) if today is not None else None
        problem = problem or content_problem(self.counts, self.max_skipped_share)
        if problem is not None:
            return Verdict(problem)
        dropped = drop_problem(name, current_entries, self.counts.entries, self.max_drop_share)
        if dropped is None:
            return Verdict()
        if self.accept_drop:
            return Verdict(accepted_drop=drop_share(current_entries or 0, self.counts.entries))
        return Verdict(dropped)
