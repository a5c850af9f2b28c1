"""``payhub report kpi``: the overview's KPIs as files to mail around (docs/console.md, "KPI reports offline").

``--format html`` writes one standalone page (its own template, ``console/templates/report_kpi.html``): the headline
figures, each chart as an inline PNG image and every table, with no script and nothing fetched. ``--format csv``
writes a directory with one ``<id>.csv`` per chart or table, the same data as the console's CSV downloads.
``--format png`` writes a directory with one ``<id>.png`` per chart. Charts are drawn by matplotlib (Agg, no display),
imported only when a report is drawn so that ``payhub --help`` stays quick. Files are written whole (a temporary file
renamed), owner-only like every file payhub writes with partner data (``[files] group_readable`` allows the group).
"""

from __future__ import annotations

import base64
import io
import re
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from payhub import csvsafe
from payhub.cli import Context, fail_cleanly, main, pass_ctx
from payhub.cli.output import console, err_console, shown
from payhub.clock import utcnow
from payhub.errors import PayhubError
from payhub.files import write_atomic

if TYPE_CHECKING:
    from payhub.kpis import Period

FORMATS = ("html", "csv", "png")
PNG_SIZE = (9.0, 4.8)
"""A chart's size in inches; at :data:`PNG_DPI`, 900 x 480 pixels."""
PNG_DPI = 100
PALETTE = ["#0b5cad", "#d1495b", "#2a9d8f", "#e9c46a", "#6d597a", "#f4a261", "#264653", "#8d99ae"]
"""The console's chart colours (console.js), so both faces look alike."""


class PeriodParam(click.ParamType["Period"]):
    """A KPI period (:meth:`payhub.kpis.Period.parse`); a bad one is a usage error naming the forms."""

    name = "period"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Period:
        from payhub.kpis import Period, PeriodError

        if isinstance(value, Period):
            return value
        try:
            return Period.parse(value)
        except PeriodError as exc:
            self.fail(str(exc), param, ctx)


@main.group()
def report() -> None:
    """Reports as files: the KPIs of a period."""


@report.command("kpi")
@click.option("--period", type=PeriodParam(), default=None,
              help="2026-Q4, 2026-11, 2026 or 2026-10-01..2026-12-31 (UTC; default: the current quarter).")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="html", show_default=True,
              help="html: one standalone page; csv: a directory of one CSV per chart or table; png: a directory of "
                   "one PNG per chart.")
@click.option("--output", "-o", type=click.Path(path_type=Path),
              help="The file (html) or directory (csv, png) to write; default kpi-<period>.html or "
                   "kpi-<period>-<format>/ here.")
@click.option("--progress/--no-progress", default=None, help="Progress display (default: when on a terminal).")
@pass_ctx
@fail_cleanly
def kpi_report(ctx: Context, period: Any, fmt: str, output: Path | None, progress: bool | None) -> None:
    """The overview's KPIs of a period as files: accrued, approved and paid by program and month, budgets and funds,
    payouts by rail and status with the success rate, time to paid, open payouts and held rewards, revenue against
    incentive cost. Money exact, per currency."""
    from payhub.kpis import Period, figures, kpis, tiles

    chosen: Period = period if period is not None else Period.quarter_of(utcnow())
    name = re.sub(r"[^A-Za-z0-9.-]+", "_", chosen.label)
    target = output if output is not None else Path(f"kpi-{name}.html" if fmt == "html" else f"kpi-{name}-{fmt}")
    _check_target(target, fmt)
    rt = ctx.runtime()
    show = err_console.is_terminal if progress is None else progress
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=err_console,
                  disable=not show, transient=True) as display:
        reading = display.add_task(f"reading the KPIs of {chosen.label}", total=1)
        with rt.engine.connect() as conn:
            found = kpis(conn, chosen, programs=rt.settings.programs)
        display.advance(reading)
        shown_figures = figures(found)
        charts = [f for f in shown_figures if f.drawable()]
        if fmt == "csv":
            writing = display.add_task("writing CSV files", total=len(shown_figures))
            target.mkdir(parents=True, exist_ok=True)
            for f in shown_figures:
                out = io.StringIO()
                writer = csvsafe.writer(out)
                writer.writerow(f.columns)
                for row in f.text_rows():
                    writer.writerow(row)
                write_atomic(target / f"{f.id}.csv", out.getvalue().encode())
                display.advance(writing)
            written = f"{len(shown_figures)} CSV files in {target}"
        else:
            drawing = display.add_task("drawing charts", total=len(charts))
            images = draw(charts, lambda: display.advance(drawing))
            if fmt == "png":
                target.mkdir(parents=True, exist_ok=True)
                for ident, image in images.items():
                    write_atomic(target / f"{ident}.png", image)
                written = f"{len(images)} PNG charts in {target}"
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                write_atomic(target, render_html(found, shown_figures, tiles(found), images).encode())
                written = f"{target} ({len(images)} charts, {len(shown_figures) - len(images)} tables)"
    console.print(f"wrote {shown(written)}", highlight=False, soft_wrap=True)


def _check_target(target: Path, fmt: str) -> None:
    if fmt == "html" and target.is_dir():
        raise PayhubError(f"--output {target} is a directory; the html report is one file")
    if fmt != "html" and target.exists() and not target.is_dir():
        raise PayhubError(f"--output {target} is a file; the {fmt} report is a directory of files")


def draw(charts: Sequence[Any], advance: Callable[[], None] = lambda: None) -> dict[str, bytes]:
    """Each chart (a :class:`payhub.kpis.Figure` with a ``kind``) as PNG bytes, by id. matplotlib draws them with the
    Agg renderer, without pyplot's global state; text is never read as mathtext (names may hold ``$``)."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure as Canvas

    images: dict[str, bytes] = {}
    with matplotlib.rc_context({"text.parse_math": False, "text.usetex": False, "font.size": 9}), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")  # glyphs missing from the font (names in any script) are drawn as boxes
        for chart in charts:
            canvas = Canvas(figsize=PNG_SIZE, dpi=PNG_DPI, layout="constrained")
            FigureCanvasAgg(canvas)
            _plot(canvas.add_subplot(), chart)
            buffer = io.BytesIO()
            canvas.savefig(buffer, format="png", metadata={"Software": None})
            images[chart.id] = buffer.getvalue()
            advance()
    return images


def _plot(axes: Any, chart: Any) -> None:
    labels = [chart.label(row) for row in chart.drawn()]
    series = chart.series()
    axes.set_title(chart.title, loc="left", fontsize=11)
    if chart.kind == "doughnut":
        values = [v or 0.0 for v in series[0][1]] if series else []
        if sum(values) > 0:
            axes.pie(values, labels=labels, colors=PALETTE, wedgeprops={"width": 0.4}, startangle=90,
                     counterclock=False)
        axes.set_aspect("equal")
        return
    positions = list(range(len(labels)))
    if chart.kind == "line":
        for index, (name, values) in enumerate(series):
            axes.plot(positions, [float("nan") if v is None else v for v in values], label=name,
                      color=PALETTE[index % len(PALETTE)], marker="o")
    else:
        width = 0.8 / max(len(series), 1)
        for index, (name, values) in enumerate(series):
            offset = (index - (len(series) - 1) / 2) * width
            axes.bar([p + offset for p in positions], [0.0 if v is None else v for v in values], width, label=name,
                     color=PALETTE[index % len(PALETTE)])
    axes.set_xticks(positions, labels, rotation=30 if len(labels) > 4 else 0, ha="right" if len(labels) > 4 else
                    "center")
    axes.set_xlabel(chart.columns[0])
    axes.set_ylabel(chart.y_label)
    axes.grid(axis="y", alpha=0.3)
    if len(series) > 1:
        axes.legend()


def render_html(found: Any, shown_figures: Sequence[Any], headline: Sequence[Any], images: dict[str, bytes]) -> str:
    """The standalone HTML report: autoescaped like every console page, images inline as ``data:`` URIs."""
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

    from payhub import __version__
    from payhub.clock import isoformat

    env = Environment(loader=PackageLoader("payhub.console", "templates"), autoescape=select_autoescape(default=True),
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["when"] = lambda value: isoformat(value)[:19].replace("T", " ") + " UTC" if value else ""
    inline = {ident: "data:image/png;base64," + base64.b64encode(image).decode() for ident, image in images.items()}
    return env.get_template("report_kpi.html").render(k=found, figures=shown_figures, tiles=headline, images=inline,
                                                       version=__version__)
