"""`kfm report energy`: energy (kWh) and carbon (kg CO2e) by producer, month and branch.

Every signed row carries ``energy_carbon {kwh, co2e_kg}`` (spec: "Energy & carbon
telemetry required").  The report groups them:

* **by producer** and **by branch** (``lakefs_branch``): sorted by CO2e, largest first,
  then by name;
* **by month**: the UTC calendar month of ``created_at`` (``YYYY-MM``), every month from
  the first to the last row's, months without rows included with zeros; each month
  also has its **month-over-month change** against the previous calendar month
  (absolute, and in percent of the previous month; ``None`` for the first month and when
  the previous month is 0);
* **totals**, and the **trend**: the ordinary least-squares slope of the monthly totals
  against the month number (0, 1, 2, ...), in kWh per month and kg CO2e per month
  (``None`` with fewer than two months).

**Exact sums.**  Sums are computed with :func:`math.fsum` (exactly rounded, so they do
not depend on row order or on where the rows were read from) and then rounded to
:data:`DECIMALS` decimal places, as are slopes and changes.

**Where the rows come from** (``source``): ``"mirror"`` reads four columns of the Parquet
mirror (fast: well under a second at 1M rows), ``"jsonl"`` streams the signed JSONL lines
and decodes only the needed fields with msgspec, ``"auto"`` (the default) uses the mirror
when its footer names the ledger's current checkpoint and the JSONL otherwise.  Both give
identical reports.
"""

from __future__ import annotations

import base64
import csv
import datetime
import io
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from kfm_ledger.log.ledger import Ledger
from kfm_ledger.log.progress import Progress

from ..errors import EnergySourceError

__all__ = [
    "DECIMALS",
    "ENERGY_FORMAT",
    "EnergyGroup",
    "EnergyReport",
    "EnergySourceError",
    "MonthEnergy",
    "Trend",
    "cells_from_jsonl",
    "cells_from_mirror",
    "energy_report",
    "plot_energy",
    "summarize",
    "use_mirror",
]

#: The ``format`` field of ``kfm report energy --json``.
ENERGY_FORMAT = "kfm.energy/v1"
#: Decimal places kept in sums, changes and slopes.
DECIMALS = 9

Source = Literal["auto", "mirror", "jsonl"]


@dataclass(frozen=True)
class EnergyGroup:
    """Totals of one group (a producer, a branch)."""

    key: str
    rows: int
    kwh: float
    co2e_kg: float

    def to_json(self, key_name: str) -> dict[str, Any]:
        return {key_name: self.key, "rows": self.rows, "kwh": self.kwh, "co2e_kg": self.co2e_kg}


@dataclass(frozen=True)
class MonthEnergy:
    """Totals of one UTC calendar month and the change from the month before."""

    month: str  #: ``YYYY-MM``
    rows: int
    kwh: float
    co2e_kg: float
    kwh_change: float | None
    kwh_change_pct: float | None
    co2e_kg_change: float | None
    co2e_kg_change_pct: float | None

    def to_json(self) -> dict[str, Any]:
        return {
            "month": self.month,
            "rows": self.rows,
            "kwh": self.kwh,
            "co2e_kg": self.co2e_kg,
            "kwh_change": self.kwh_change,
            "kwh_change_pct": self.kwh_change_pct,
            "co2e_kg_change": self.co2e_kg_change,
            "co2e_kg_change_pct": self.co2e_kg_change_pct,
        }


@dataclass(frozen=True)
class Trend:
    """Least-squares slopes of the monthly totals (per calendar month)."""

    months: int
    kwh_per_month: float | None
    co2e_kg_per_month: float | None
    method: str = "ordinary least squares over calendar months (months without rows count as 0)"

    def to_json(self) -> dict[str, Any]:
        return {
            "months": self.months,
            "kwh_slope_per_month": self.kwh_per_month,
            "co2e_kg_slope_per_month": self.co2e_kg_per_month,
            "method": self.method,
        }


@dataclass(frozen=True)
class EnergyReport:
    """The energy and carbon report of the first ``tree_size`` rows (see the module doc)."""

    tree_size: int
    root: bytes
    source: str  #: "mirror" or "jsonl"
    rows: int
    total_kwh: float
    total_co2e_kg: float
    by_producer: tuple[EnergyGroup, ...]
    by_month: tuple[MonthEnergy, ...]
    by_branch: tuple[EnergyGroup, ...]
    trend: Trend

    def to_json(self) -> dict[str, Any]:
        return {
            "format": ENERGY_FORMAT,
            "tree_size": self.tree_size,
            "root": base64.b64encode(self.root).decode(),
            "source": self.source,
            "totals": {"rows": self.rows, "kwh": self.total_kwh, "co2e_kg": self.total_co2e_kg},
            "by_producer": [g.to_json("producer") for g in self.by_producer],
            "by_month": [m.to_json() for m in self.by_month],
            "by_branch": [g.to_json("branch") for g in self.by_branch],
            "trend": self.trend.to_json(),
        }

    def render_csv(self) -> str:
        """One CSV table: ``section,key,rows,kwh,co2e_kg,kwh_change,kwh_change_pct,co2e_kg_change,
        co2e_kg_change_pct``; sections ``producer``, ``month``, ``branch``, ``total``, ``trend``
        (the trend row holds the slopes in the kwh and co2e_kg columns)."""
        out = io.StringIO()
        w = csv.writer(out, lineterminator="\n")
        w.writerow(["section", "key", "rows", "kwh", "co2e_kg", "kwh_change", "kwh_change_pct",
                    "co2e_kg_change", "co2e_kg_change_pct"])
        cell = lambda v: "" if v is None else repr(v) if isinstance(v, float) else str(v)  # noqa: E731
        for g in self.by_producer:
            w.writerow(["producer", g.key, g.rows, cell(g.kwh), cell(g.co2e_kg), "", "", "", ""])
        for m in self.by_month:
            w.writerow(["month", m.month, m.rows, cell(m.kwh), cell(m.co2e_kg), cell(m.kwh_change),
                        cell(m.kwh_change_pct), cell(m.co2e_kg_change), cell(m.co2e_kg_change_pct)])
        for g in self.by_branch:
            w.writerow(["branch", g.key, g.rows, cell(g.kwh), cell(g.co2e_kg), "", "", "", ""])
        w.writerow(["total", "", self.rows, cell(self.total_kwh), cell(self.total_co2e_kg), "", "", "", ""])
        w.writerow(["trend", "slope_per_month", self.trend.months, cell(self.trend.kwh_per_month),
                    cell(self.trend.co2e_kg_per_month), "", "", "", ""])
        return out.getvalue()

    def render_text(self) -> str:
        out = [
            f"Energy and carbon of {self.rows} rows (tree size {self.tree_size}, read from the {self.source})",
            "",
        ]
        out += _table("producer", self.by_producer)
        out.append("")
        out += _month_table(self.by_month)
        out.append("")
        out += _table("branch", self.by_branch)
        out.append("")
        out.append(f"total  {self.rows} rows  {_num(self.total_kwh)} kWh  {_num(self.total_co2e_kg)} kg CO2e")
        t = self.trend
        if t.kwh_per_month is None:
            out.append(f"trend  n/a (needs at least two months; have {t.months})")
        else:
            out.append(
                f"trend  {_signed(t.kwh_per_month)} kWh/month, {_signed(t.co2e_kg_per_month)} kg CO2e/month "
                f"(least-squares slope over {t.months} calendar months)"
            )
        return "\n".join(out)


def _num(x: float | None, places: int = 3) -> str:
    return "n/a" if x is None else f"{x:,.{places}f}"


def _signed(x: float | None, places: int = 3) -> str:
    return "n/a" if x is None else f"{x:+,.{places}f}"


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:+.1f}%"


def _align(rows: list[list[str]], right: Sequence[bool]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for n, r in enumerate(rows):
        cells = [c.rjust(w) if right[i] else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return lines


def _table(title: str, groups: Sequence[EnergyGroup]) -> list[str]:
    rows = [[title, "rows", "kWh", "kg CO2e"]]
    rows += [[g.key, str(g.rows), _num(g.kwh), _num(g.co2e_kg)] for g in groups]
    return _align(rows, [False, True, True, True])


def _month_table(months: Sequence[MonthEnergy]) -> list[str]:
    rows = [["month", "rows", "kWh", "kg CO2e", "kWh MoM", "CO2e MoM"]]
    for m in months:
        rows.append([m.month, str(m.rows), _num(m.kwh), _num(m.co2e_kg), _pct(m.kwh_change_pct),
                     _pct(m.co2e_kg_change_pct)])
    return _align(rows, [False, True, True, True, True, True])


# ------------------------------------------------------------------- summing

# (producer, month, branch) -> ([kwh...], [co2e...]): the finest groups, whose value
# lists are fsum'd alone or concatenated, so every sum is exact whatever the source.
Cells = dict[tuple[str, str, str], tuple[list[float], list[float]]]


def _round(x: float) -> float:
    if not math.isfinite(x):
        return x  # a sum that overflowed a double stays inf (null in JSON, "inf" in text)
    r = round(x, DECIMALS)
    return 0.0 if r == 0 else r  # no -0.0


def _fsum(values: Iterable[float]) -> float:
    """:func:`math.fsum`, or +-inf where the exact sum does not fit a double (rows of
    ``kwh: 1.7976931348623157e308``): a report shows the overflow instead of dying."""
    values = list(values)
    try:
        return math.fsum(values)
    except OverflowError:
        return sum(values)


def _month_range(first: str, last: str) -> list[str]:
    y, m = int(first[:4]), int(first[5:7])
    end = (int(last[:4]), int(last[5:7]))
    months = []
    while (y, m) <= end:
        months.append(f"{y:04d}-{m:02d}")
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)
    return months


def _slope(values: Sequence[float]) -> float | None:
    n = len(values)
    if n < 2:
        return None
    if not all(map(math.isfinite, values)):
        return None  # no trend through an overflowed month
    x_mean = (n - 1) / 2
    y_mean = _fsum(values) / n
    num = _fsum((i - x_mean) * (v - y_mean) for i, v in enumerate(values))
    den = math.fsum((i - x_mean) ** 2 for i in range(n))
    slope = num / den
    return _round(slope) if math.isfinite(slope) else None


def _change(cur: float, prev: float | None) -> tuple[float | None, float | None]:
    if prev is None or not (math.isfinite(cur) and math.isfinite(prev)):
        return None, None
    delta = cur - prev
    pct = None if prev == 0 else delta / prev * 100.0
    return _round(delta), (None if pct is None or not math.isfinite(pct) else _round(pct))


def summarize(cells: Cells, *, tree_size: int, root: bytes, source: str) -> EnergyReport:
    """Build the report from the finest groups (pure)."""

    def group(index: int) -> dict[str, tuple[int, list[float], list[float]]]:
        acc: dict[str, tuple[int, list[float], list[float]]] = {}
        for key, (kwh, co2e) in cells.items():
            name = key[index]
            n, k, c = acc.get(name, (0, [], []))
            k.extend(kwh)
            c.extend(co2e)
            acc[name] = (n + len(kwh), k, c)
        return acc

    def groups(index: int) -> tuple[EnergyGroup, ...]:
        made = [
            EnergyGroup(name, n, _round(_fsum(k)), _round(_fsum(c))) for name, (n, k, c) in group(index).items()
        ]
        return tuple(sorted(made, key=lambda g: (-g.co2e_kg, -g.kwh, g.key)))

    by_month_raw = group(1)
    months: list[MonthEnergy] = []
    prev: tuple[float, float] | None = None
    if by_month_raw:
        for month in _month_range(min(by_month_raw), max(by_month_raw)):
            n, k, c = by_month_raw.get(month, (0, [], []))
            kwh, co2e = _round(_fsum(k)), _round(_fsum(c))
            kc, kp = _change(kwh, prev[0] if prev else None)
            cc, cp = _change(co2e, prev[1] if prev else None)
            months.append(MonthEnergy(month, n, kwh, co2e, kc, kp, cc, cp))
            prev = (kwh, co2e)
    all_kwh = [v for kwh, _ in cells.values() for v in kwh]
    all_co2e = [v for _, co2e in cells.values() for v in co2e]
    return EnergyReport(
        tree_size=tree_size,
        root=root,
        source=source,
        rows=len(all_kwh),
        total_kwh=_round(_fsum(all_kwh)),
        total_co2e_kg=_round(_fsum(all_co2e)),
        by_producer=groups(0),
        by_month=tuple(months),
        by_branch=groups(2),
        trend=Trend(
            months=len(months),
            kwh_per_month=_slope([m.kwh for m in months]),
            co2e_kg_per_month=_slope([m.co2e_kg for m in months]),
        ),
    )


# ------------------------------------------------------------------- sources


class _EnergyCarbon(msgspec.Struct):
    kwh: float
    co2e_kg: float


class _EnergyFields(msgspec.Struct):
    """Just the fields the report needs; msgspec skips the others without building them."""

    lakefs_branch: str
    created_at: str
    producer: str
    energy_carbon: _EnergyCarbon


_LINE_DECODER = msgspec.json.Decoder(_EnergyFields)


def cells_from_jsonl(blocks: Iterable[bytes]) -> Cells:
    """Finest groups from blocks of complete JSONL lines (each block ends with ``\\n``)."""
    cells: Cells = {}
    for data in blocks:
        if not data:
            continue
        rows = _LINE_DECODER.decode_lines(data)  # one call per block, no copy
        for r in rows:
            key = (r.producer, r.created_at[:7], r.lakefs_branch)  # created_at is UTC: YYYY-MM
            cell = cells.get(key)
            if cell is None:
                cell = cells[key] = ([], [])
            cell[0].append(r.energy_carbon.kwh)
            cell[1].append(r.energy_carbon.co2e_kg)
    return cells


def cells_from_mirror(data: Any) -> Cells:
    """Finest groups from the mirror (a path or bytes), reading four columns with pyarrow."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    source = data if isinstance(data, str) else pa.BufferReader(data)
    table = pq.read_table(source, columns=["producer", "lakefs_branch", "created_at", "energy_carbon"])
    # The stored instants are UTC; dropping the zone keeps the UTC wall clock.
    naive = table.column("created_at").cast(pa.timestamp("us"))
    energy = table.column("energy_carbon")
    slim = pa.table(
        {
            "producer": table.column("producer"),
            "month": pc.strftime(naive, format="%Y-%m"),
            "branch": table.column("lakefs_branch"),
            "kwh": pc.struct_field(energy, "kwh"),
            "co2e": pc.struct_field(energy, "co2e_kg"),
        }
    )
    grouped = slim.group_by(["producer", "month", "branch"], use_threads=False).aggregate(
        [("kwh", "list"), ("co2e", "list")]
    )
    cells: Cells = {}
    keys = zip(
        grouped.column("producer").to_pylist(),
        grouped.column("month").to_pylist(),
        grouped.column("branch").to_pylist(),
    )
    kwh_lists = grouped.column("kwh_list").to_pylist()
    co2e_lists = grouped.column("co2e_list").to_pylist()
    for key, kwh, co2e in zip(keys, kwh_lists, co2e_lists):
        cells[key] = (kwh, co2e)
    return cells


def use_mirror(ledger: Ledger, source: Source) -> bool:
    """Whether to read the Parquet mirror for ``source`` (``report energy``, ``impact``).

    ``"jsonl"``: no.  ``"auto"``: when the mirror's footer names the ledger's current
    checkpoint (:func:`~kfm_ledger.mirror.check_mirror` without regenerating).  ``"mirror"``:
    then too, else :class:`EnergySourceError` saying why and what to run.
    """
    from .. import mirror

    if source not in ("auto", "mirror", "jsonl"):
        raise ValueError(f"unknown source {source!r}")
    if source == "jsonl":
        return False
    if getattr(ledger, "is_remote", False) and ledger.mirror_file is None:
        # An S3 ledger keeps no mirror in its bucket (docs/s3.md): only a local file named by --mirror-file.
        if source == "mirror":
            raise EnergySourceError(
                "an s3:// ledger has no Parquet mirror in its bucket; give --mirror-file FILE (written by "
                "`kfm mirror --out FILE`) or use --source jsonl: the rows are then read from the entry "
                "bundles and proven against the signed checkpoint",
                state="missing",
                problems=("an s3:// ledger keeps no mirror in its bucket",),
            )
        return False
    status = mirror.check_mirror(ledger, regenerate=False)
    if status.ok:
        return True
    if source == "mirror":
        raise EnergySourceError(
            f"the mirror cannot be used: {status.state}: "
            + "; ".join(status.problems)
            + f"; run `{status.regenerate_command}` or use --source jsonl",
            state=status.state,
            problems=status.problems,
        )
    return False


def energy_report(ledger: Ledger, *, source: Source = "auto", progress: Progress | None = None) -> EnergyReport:
    """The energy report of ``ledger``'s signed rows (see the module docstring for ``source``);
    ``progress(rows done, rows)`` is called per block of a JSONL scan."""
    from .. import mirror

    if use_mirror(ledger, source):
        cells = cells_from_mirror(mirror.mirror_source(ledger))
        used = "mirror"
    else:
        blocks = mirror.iter_line_blocks(ledger, max_bytes=mirror.BLOCK_BYTES, progress=progress)
        cells = cells_from_jsonl(block.data for block in blocks)
        used = "jsonl"
    return summarize(cells, tree_size=ledger.size, root=ledger.root, source=used)


#: The chart's size in inches at :data:`PLOT_DPI`: 1000 x 600 pixels, whatever the span.
PLOT_SIZE = (10.0, 6.0)
PLOT_DPI = 100
#: Up to this many months one bar a month; up to :data:`QUARTERS_UP_TO` one a quarter; then one a year.
MONTHS_UP_TO = 36
QUARTERS_UP_TO = 120
#: At most this many labelled ticks on the time axis.
MAX_TICK_LABELS = 16


@dataclass(frozen=True)
class _Period:
    label: str
    first: int  #: index of its first month in report.by_month
    months: int  #: months of the report in it
    length: int  #: calendar months in the period (1, 3 or 12)
    kwh: float  #: average monthly kWh over its months
    co2e_kg: float
    partial: bool  #: fewer months than the period has, or holds the month still in progress


def _periods(months: Sequence[MonthEnergy], in_progress: str | None) -> tuple[str, list[_Period]]:
    """The bars: months, quarters or years (by the span), each the average of its months."""
    n = len(months)
    unit, length = ("month", 1) if n <= MONTHS_UP_TO else ("quarter", 3) if n <= QUARTERS_UP_TO else ("year", 12)

    def key(month: str) -> str:
        if length == 1:
            return month
        if length == 3:
            return f"{month[:4]}-Q{(int(month[5:7]) - 1) // 3 + 1}"
        return month[:4]

    periods: list[_Period] = []
    i = 0
    while i < n:
        label = key(months[i].month)
        j = i
        while j < n and key(months[j].month) == label:
            j += 1
        members = months[i:j]
        periods.append(
            _Period(
                label,
                i,
                j - i,
                length,
                _fsum(m.kwh for m in members) / len(members),
                _fsum(m.co2e_kg for m in members) / len(members),
                partial=len(members) < length or any(m.month == in_progress for m in members),
            )
        )
        i = j
    return unit, periods


def _in_progress_month(report: EnergyReport, as_of: datetime.datetime | None) -> str | None:
    """The report's last month if it is not over at ``as_of`` (default: now, UTC), else None."""
    if not report.by_month:
        return None
    now = as_of if as_of is not None else datetime.datetime.now(datetime.UTC)
    last = report.by_month[-1].month
    return last if f"{now.year:04d}-{now.month:02d}" <= last else None


def plot_energy(report: EnergyReport, *, as_of: datetime.datetime | None = None) -> bytes:
    """PNG bytes of a chart: monthly kWh and CO2e as bars, with the least-squares trend lines.

    The image is always :data:`PLOT_SIZE` at :data:`PLOT_DPI` (1000 x 600 px): up to
    :data:`MONTHS_UP_TO` months one bar a month, up to :data:`QUARTERS_UP_TO` one a
    quarter, beyond that one a year; a bar is the average monthly total of its months, so
    bars and trend share one unit (kWh per month, kg CO2e per month), and at most
    :data:`MAX_TICK_LABELS` ticks are labelled.  A period with fewer months than it has, or
    holding the month still in progress at ``as_of`` (default: now, UTC), is hatched; the
    month in progress is left out of the trend line (its total is not final).  A report with
    no rows gives an image that says so, with no axes.

    Needs matplotlib (``pip install 'kfm-ledger[plot]'``); draws with the Agg backend, so
    no display is needed.
    """
    from .query import require_extra

    matplotlib = require_extra("matplotlib", "plot", "kfm report energy --plot")
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    if not report.by_month:
        fig = plt.figure(figsize=PLOT_SIZE)
        try:
            fig.text(0.5, 0.5, f"No rows at tree size {report.tree_size}: nothing to chart.",
                     ha="center", va="center", fontsize=16)
            return _png(fig)
        finally:
            plt.close(fig)
    in_progress = _in_progress_month(report, as_of)
    unit, periods = _periods(report.by_month, in_progress)
    full = [m for m in report.by_month if m.month != in_progress]
    fig, (ax_kwh, ax_co2) = plt.subplots(2, 1, figsize=PLOT_SIZE, sharex=True)
    try:
        for ax, name, values, colour in (
            (ax_kwh, "kWh", [p.kwh for p in periods], "tab:blue"),
            (ax_co2, "kg CO2e", [p.co2e_kg for p in periods], "tab:green"),
        ):
            centres = [p.first + (p.months - 1) / 2 for p in periods]
            widths = [0.8 * p.months if p.length == 1 else p.months - 0.2 for p in periods]
            if not all(map(math.isfinite, values)):  # a sum past the largest double: no bar, a note
                values = [v if math.isfinite(v) else math.nan for v in values]
                ax.text(0.99, 0.97, "a period's sum overflows a double: not drawn", transform=ax.transAxes,
                        ha="right", va="top", fontsize="small", color="firebrick")
            bars = ax.bar(centres, values, width=widths, color=colour,
                          label=f"{name} per month" + ("" if unit == "month" else f" (average of each {unit})"))
            for bar, p in zip(bars, periods):
                if p.partial:
                    bar.set_alpha(0.45)
                    bar.set_hatch("//")
            if any(p.partial for p in periods):
                ax.bar([0], [0], width=0, color=colour, alpha=0.45, hatch="//", label=f"partial {unit}")
            slope = _slope([m.kwh if name == "kWh" else m.co2e_kg for m in full])
            if slope is not None:
                ys = [m.kwh if name == "kWh" else m.co2e_kg for m in full]
                mean_x = (len(ys) - 1) / 2
                mean_y = _fsum(ys) / len(ys)
                xs = [0, len(ys) - 1]
                note = f"; {in_progress} in progress, left out" if in_progress else ""
                ax.plot(xs, [mean_y + slope * (x - mean_x) for x in xs], color="black", linestyle="--",
                        label=f"trend {slope:+,.3f} {name}/month per month ({len(ys)} full months{note})")
            ax.set_ylabel(f"{name} per month")
            top = max([v for v in values if math.isfinite(v)] + [0.0])
            if top > 0:
                headroom = top * 1.45  # the legend never hides a bar
                ax.set_ylim(0, headroom if math.isfinite(headroom) else top)
            ax.legend(loc="upper left", fontsize="small")
        step = max(1, math.ceil(len(periods) / MAX_TICK_LABELS))
        shown = periods[::step]
        ax_co2.set_xticks([p.first + (p.months - 1) / 2 for p in shown])
        ax_co2.set_xticklabels([p.label for p in shown], rotation=45, ha="right")
        ax_co2.set_xlim(-0.6, len(report.by_month) - 0.4)
        span = f"{report.by_month[0].month} to {report.by_month[-1].month}, {len(report.by_month)} months"
        fig.suptitle(f"Energy and carbon by {unit} (UTC), {span}; {report.rows} rows, tree size {report.tree_size}")
        fig.tight_layout()
        return _png(fig)
    finally:
        plt.close(fig)


def _png(fig: Any) -> bytes:
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=PLOT_DPI, metadata={"Software": None})
    return out.getvalue()
