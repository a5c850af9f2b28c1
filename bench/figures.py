"""One measured figure next to its target, and the table ``python -m bench --compare`` prints."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal


@dataclass(frozen=True)
class CompareOptions:
    """What ``--compare`` measures: pipeline sizes, the PostgreSQL URL (None skips the PostgreSQL figures), where
    work directories go, and ``quick`` for small sizes while iterating (figures then do not count against targets)."""

    sizes: tuple[int, ...] = (100_000, 1_000_000)
    pg_sizes: tuple[int, ...] | None = None  # the PostgreSQL pipeline's sizes; None: the same as ``sizes``
    pg_url: str | None = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    workdir: Path | None = None
    quick: bool = False
    seed: int = 7
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Figure:
    """``value`` (in ``unit``) against ``target``; ``better`` says which way is good. ``ratio`` is value/target
    for 'higher' and target/value for 'lower', so a ratio ≥ 1 always means the target is met."""

    name: str
    value: float | None
    unit: str
    target: float | None = None
    better: Literal["higher", "lower"] = "higher"
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.value is None or self.target is None or self.target == 0:
            return None
        if self.better == "higher":
            return self.value / self.target
        return self.target / self.value if self.value else None

    @property
    def met(self) -> bool | None:
        ratio = self.ratio
        return None if ratio is None else ratio >= 1.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": self.ratio, "met": self.met}


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:,.2f}"
    return f"{value:.3f}"


def render_table(figures: list[Figure]) -> str:
    """A plain-text table: figure, value, unit, target, ratio, met (yes/NO/-) and the note."""
    head = ("figure", "value", "unit", "target", "ratio", "met", "note")
    rows = [head]
    for fig in figures:
        sign = "≥" if fig.better == "higher" else "≤"
        target = "-" if fig.target is None else f"{sign} {_num(fig.target)}"
        met = "-" if fig.met is None else ("yes" if fig.met else "NO")
        ratio = "-" if fig.ratio is None else f"{fig.ratio:.2f}"
        rows.append((fig.name, _num(fig.value), fig.unit, target, ratio, met, fig.note))
    widths = [max(len(row[i]) for row in rows) for i in range(len(head) - 1)]
    lines = []
    for row in rows:
        cells = [row[i].ljust(widths[i]) if i == 0 else row[i].rjust(widths[i]) for i in range(len(head) - 1)]
        lines.append("  ".join(cells) + ("  " + row[-1] if row[-1] else ""))
    return os.linesep.join(lines)
