"""Figures of the report (matplotlib object API, Agg; no pyplot state, nothing at import time).

Every function takes already-aggregated numbers and returns a :class:`matplotlib.figure.Figure` drawn at its
print width: :data:`SINGLE` (3.3 in, one column of a two-column paper) with 7-8 pt fonts, accuracy matrices
at :data:`DOUBLE` (6.8 in). Every strategy keeps its colour, marker and line style (:class:`~.data.Style`) in
every figure; legends sit outside the axes. :func:`figure_bytes` renders a figure to PNG (300 dpi) or PDF
(fonts embedded as TrueType, no creation date, so reruns are byte-stable).
"""

from __future__ import annotations

import functools
import io
import math
import textwrap
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from clbench.stats import Aggregate, RankResult, pareto_front

from .data import Style

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

SINGLE = 3.3
DOUBLE = 6.8
PNG_DPI = 200
#: the smallest font any figure uses (pt, at print width)
MIN_FONT = 6.5
RC = {"font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "xtick.labelsize": 7, "ytick.labelsize": 7,
      "legend.fontsize": 7, "figure.titlesize": 8, "pdf.fonttype": 42, "ps.fonttype": 42, "axes.linewidth": 0.6,
      "xtick.major.width": 0.6, "ytick.major.width": 0.6, "lines.linewidth": 1.2, "lines.markersize": 4,
      "legend.handlelength": 2.6, "svg.fonttype": "none"}
FAILED_COLOR = "#b00020"


@contextmanager
def style() -> Iterator[None]:
    """The report's matplotlib settings (fonts sized for print width; PDF fonts embedded as TrueType)."""
    import matplotlib

    with matplotlib.rc_context(RC):
        yield


@dataclass
class Curve:
    """Mean over seeds at x = 1..T and the band's edges (NaN: no band), ``n`` seeds."""

    name: str
    style: Style
    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray
    n: int


@dataclass
class SeriesPoint:
    """Aggregates of one strategy on one benchmark for the bar and cost figures (``None``: every cell failed)."""

    name: str
    style: Style
    score: Aggregate | None
    forgetting: Aggregate | None
    train_seconds: Aggregate | None
    state_bytes: Aggregate | None
    alloc_peak_mb: Aggregate | None
    n_failed: int = 0
    n_total: int = 0


@dataclass
class TuneEntry:
    """One strategy of a tune run: the two protocols' scores (fractions) and ranks (1 = best)."""

    name: str
    conventional: float
    two_phase: float
    rank_conventional: float = float("nan")
    rank_two_phase: float = float("nan")
    extra: dict = field(default_factory=dict)


def _figure(width: float, height: float) -> "Figure":
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained", dpi=100)
    FigureCanvasAgg(fig)
    fig.get_layout_engine().set(w_pad=0.02, h_pad=0.02, wspace=0.04, hspace=0.04)
    return fig


def figure_bytes(fig: "Figure", fmt: str, dpi: int = PNG_DPI) -> bytes:
    """PNG or PDF bytes of ``fig`` (no creation date in the PDF, no software tag in the PNG)."""
    buf = io.BytesIO()
    meta = {"CreationDate": None} if fmt == "pdf" else {"Software": None}
    with style():
        fig.savefig(buf, format=fmt, dpi=dpi, metadata=meta)
    return buf.getvalue()


def _spread(a: Aggregate | None, kind: str, scale: float = 1.0) -> float:
    """Half-width of the whisker (0 when undefined: one seed)."""
    if a is None or a.n == 0:
        return 0.0
    h = a.spread(kind)
    return 0.0 if math.isnan(h) else scale * h


@functools.lru_cache(maxsize=4096)
def text_width(text: str, size: float) -> float:
    """Width in inches of one line of ``text`` at ``size`` pt in the default font (FreeType metrics)."""
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import text_to_path

    if not text:
        return 0.0
    with style():
        w, _, _ = text_to_path.get_text_width_height_descent(text, FontProperties(size=size), ismath=False)
    return w / 72


def _fit(label: str, width_in: float, size: float) -> str:
    """``label`` shortened with an ellipsis until it fits ``width_in``."""
    if text_width(label, size) <= width_in:
        return label
    while len(label) > 4 and text_width(label + "…", size) > width_in:
        label = label[:-1]
    return label + "…"


def _legend_below(fig: "Figure", handles: list, labels: list[str]) -> None:
    """One legend under the axes, outside the data, in as many columns (up to 3) as the figure's width holds."""
    if not handles:
        return
    size = float(RC["legend.fontsize"])
    room = fig.get_figwidth() - 0.1
    per_entry = 0.5  # handle, padding and column spacing, inches
    widest = max(text_width(s, size) for s in labels) + per_entry
    ncol = max(1, min(3, len(handles), int(room // widest)))
    if ncol == 1 and widest > room:
        labels = [_fit(s, room - per_entry, size) for s in labels]
    fig.legend(handles, labels, loc="outside lower center", ncol=ncol, frameon=False, columnspacing=1.0,
               handletextpad=0.4, borderaxespad=0.2)


def _wrap(text: str, fig_width: float = SINGLE, fontsize: float = 8.0) -> str:
    """``text`` broken into lines that each fit the figure's width (measured in the default font)."""
    if not text:
        return text
    room = fig_width - 0.15
    lines: list[str] = []
    line = ""
    for word in text.split():
        trial = f"{line} {word}" if line else word
        if line and text_width(trial, fontsize) > room:
            lines.append(line)
            line = word
        else:
            line = trial
    lines.append(line)
    return "\n".join(_fit(x, room, fontsize) for x in lines)


def _legend_rows(fig_width: float, labels: Sequence[str]) -> int:
    """Rows the legend of :func:`_legend_below` takes for ``labels`` at ``fig_width``."""
    if not labels:
        return 0
    widest = max(text_width(s, float(RC["legend.fontsize"])) for s in labels) + 0.5
    ncol = max(1, min(3, len(labels), int((fig_width - 0.1) // widest)))
    return math.ceil(len(labels) / ncol)


# ---------------------------------------------------------------------------------------------- seen accuracy

def seen_accuracy_figure(title: str, curves: Sequence[Curve], band_text: str) -> "Figure":
    r"""Accuracy on the union of the seen test sets after each experience, a_i (percent): mean over seeds as a line
    with the strategy's marker and line style (hollow markers: coinciding curves stay visible), band as chosen."""
    with style():
        k = len(curves)
        labels = [f"{c.name} (n={c.n})" for c in curves]
        fig = _figure(SINGLE, 2.45 + 0.15 * _legend_rows(SINGLE, labels))
        ax = fig.add_subplot()
        lo_all = []
        for c in curves:
            x = np.arange(1, len(c.mean) + 1)
            ax.plot(x, 100 * c.mean, color=c.style.color, marker=c.style.marker, linestyle=c.style.linestyle,
                    markerfacecolor="white", markeredgewidth=1.0, label=f"{c.name} (n={c.n})", zorder=3)
            ok = np.isfinite(c.low) & np.isfinite(c.high)
            if ok.any():
                ax.fill_between(x, 100 * np.where(ok, c.low, c.mean), 100 * np.where(ok, c.high, c.mean),
                                color=c.style.color, alpha=0.15, linewidth=0, zorder=1)
                lo_all.append(np.nanmin(np.where(ok, c.low, c.mean)))
            lo_all.append(np.nanmin(c.mean))
        T = max((len(c.mean) for c in curves), default=1)
        ax.set_xticks(np.arange(1, T + 1) if T <= 12 else np.unique(np.linspace(1, T, 8).round().astype(int)))
        ax.set_xlim(0.7, T + 0.3)
        low = 100 * min(lo_all) if lo_all else 0.0
        ax.set_ylim(max(0.0, 10 * math.floor((low - 2) / 10)), 101)
        ax.set_xlabel("after training on experience")
        ax.set_ylabel("accuracy on seen data (%)")
        ax.grid(alpha=0.3, linewidth=0.5)
        fig.suptitle(_wrap(f"{title}; band: {band_text}"))
        handles, labels = ax.get_legend_handles_labels()
        _legend_below(fig, handles, labels)
    return fig


# ---------------------------------------------------------------------------------------------- accuracy matrix

def accuracy_matrix_figure(title: str, matrices: Sequence[tuple[str, np.ndarray, int]]) -> "Figure":
    """One heatmap per strategy of the mean accuracy matrix R[i, j] (percent; rows: trained, columns: evaluated);
    an experience without test data (NaN) is a blank cell marked "–"."""
    with style():
        k = max(1, len(matrices))
        ncols = min(4, k)
        nrows = math.ceil(k / ncols)
        width = DOUBLE if k > 1 else SINGLE
        cell = (width - 1.0) / ncols
        title_lines = max((len(textwrap.wrap(f"{m[0]} (n={m[2]})", max(8, int(cell * 72 / 4.2)))) for m in matrices), default=1)
        fig = _figure(width, (cell + 0.25 + 0.13 * title_lines) * nrows + 0.55)
        axes = fig.subplots(nrows, ncols, squeeze=False)
        im = None
        for idx, ax in enumerate(axes.flat):
            if idx >= len(matrices):
                ax.set_axis_off()
                continue
            name, R, n = matrices[idx]
            R = 100 * np.asarray(R, dtype=float)
            im = ax.imshow(R, vmin=0, vmax=100, cmap="viridis", origin="upper")
            T = R.shape[0]
            if T <= 10:
                for i in range(T):
                    for j in range(R.shape[1]):
                        v = R[i, j]
                        if np.isnan(v):  # an experience without test data (e.g. a blurry one with no new class)
                            ax.text(j, i, "–", ha="center", va="center", fontsize=7, color="0.4")
                            continue
                        ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=MIN_FONT if T > 6 else 7,
                                color="white" if v < 60 else "black")
            ticks = np.arange(T) if T <= 10 else np.unique(np.linspace(0, T - 1, 6).round().astype(int))
            ax.set_xticks(ticks, [str(t + 1) for t in ticks])
            ax.set_yticks(ticks, [str(t + 1) for t in ticks])
            if idx >= len(matrices) - ncols:
                ax.set_xlabel("evaluated experience j")
            if idx % ncols == 0:
                ax.set_ylabel("after experience i")
            ax.set_title("\n".join(textwrap.wrap(f"{name} (n={n})", max(8, int(cell * 72 / 4.2)))), fontsize=7)
        if im is not None:
            fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.8, label="accuracy (%)")
        fig.suptitle(_wrap(f"{title}: accuracy matrix R[i, j] (%), mean over seeds", width))
    return fig


# ---------------------------------------------------------------------------------------------- bars

def final_bars_figure(title: str, points: Sequence[SeriesPoint], score_title: str, spread: str, spread_text: str) -> "Figure":
    """Horizontal bars of the headline accuracy and of forgetting (percent), mean over seeds with ``spread`` whiskers;
    the axis always extends past every whisker; strategies whose every cell failed are labelled 'failed'."""
    with style():
        k = len(points)
        fig = _figure(SINGLE, 0.95 + 0.2 * k)
        axes = fig.subplots(1, 2, sharey=True)
        y = np.arange(k)
        for ax, attr, label in ((axes[0], "score", f"{score_title} (%)"), (axes[1], "forgetting", "forgetting (%)")):
            lo, hi = 0.0, 1.0
            for i, p in enumerate(points):
                a: Aggregate | None = getattr(p, attr)
                if a is None or a.n == 0 or math.isnan(a.mean):
                    ax.text(0.02, i, "failed" if a is None else "n/a", transform=ax.get_yaxis_transform(), ha="left",
                            va="center", color=FAILED_COLOR if a is None else "0.4", fontsize=7, fontweight="bold")
                    continue
                m, e = 100 * a.mean, _spread(a, spread, 100)
                ax.barh(i, m, xerr=e if e > 0 else None, color=p.style.color, alpha=0.85, edgecolor="black",
                        linewidth=0.4, height=0.7, error_kw={"elinewidth": 0.8, "capsize": 2, "capthick": 0.8})
                lo, hi = min(lo, m - e, m), max(hi, m + e, m)
                if p.n_failed:
                    ax.text(max(m + e, 0), i, f" {p.n_failed}/{p.n_total} failed", va="center", ha="left",
                            color=FAILED_COLOR, fontsize=MIN_FONT)
            pad = 0.04 * (hi - lo)
            ax.set_xlim(lo - pad if lo < 0 else 0.0, hi + pad)
            ax.axvline(0, color="black", linewidth=0.6)
            ax.set_xlabel(label)
            ax.grid(axis="x", alpha=0.3, linewidth=0.5)
        axes[0].set_yticks(y, [p.name for p in points])
        axes[0].set_ylim(k - 0.5, -0.5)
        fig.suptitle(_wrap(f"{title}; whiskers: {spread_text}"))
    return fig


# ---------------------------------------------------------------------------------------------- cost

def _seconds(v: float, _pos: int | None = None) -> str:
    if v <= 0:
        return "0"
    if v < 1:
        return f"{1000 * v:.3g} ms"
    if v < 120:
        return f"{v:.3g} s"
    return f"{v / 60:.3g} min"


def _bytes(v: float, _pos: int | None = None) -> str:
    if v <= 0:
        return "0"
    for unit, f in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if v >= f:
            return f"{v / f:.3g} {unit}"
    return f"{v:.3g} B"


def _mib(v: float, _pos: int | None = None) -> str:
    return f"{v:.3g}"


def _range(a: Aggregate | None, scale: float) -> tuple[float, float]:
    """[min, max] over seeds (a cost is skewed by machine load: its whisker is the range, never below zero)."""
    if a is None or a.n == 0:
        return float("nan"), float("nan")
    return scale * a.min, scale * a.max


_CANDIDATES = ((5, 3, "left", "bottom"), (5, -3, "left", "top"), (-5, 3, "right", "bottom"), (-5, -3, "right", "top"),
               (0, 6, "center", "bottom"), (0, -6, "center", "top"), (9, 0, "left", "center"), (-9, 0, "right", "center"))


def _darker(color: str, factor: float = 0.7) -> tuple[float, float, float]:
    """The strategy's colour, darkened so that a label in it reads on white."""
    from matplotlib.colors import to_rgb

    return tuple(factor * c for c in to_rgb(color))


def _overlap(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def place_labels(fig: "Figure", ax: "Axes", items: Sequence[tuple[float, float, str, str]], avoid: list) -> int:
    """Label data points directly where a label fits: inside the axes, clear of every marker and earlier label
    (display-coordinate boxes from the renderer). A label that fits nowhere is left out (the legend names every
    point). Needs the layout to be final. Returns how many labels were placed."""
    from matplotlib.transforms import Bbox

    renderer = fig.canvas.get_renderer()
    box = ax.get_window_extent(renderer)
    r = 4 * fig.dpi / 72  # marker radius in pixels (marker size ~5 pt + edge)
    markers = [Bbox.from_extents(px - r, py - r, px + r, py + r)
               for px, py in (ax.transData.transform((x, y)) for x, y, _, _ in items if np.isfinite(x) and np.isfinite(y))]
    placed = 0
    for x, y, text, color in items:
        if not (np.isfinite(x) and np.isfinite(y)):
            continue
        for dx, dy, ha, va in _CANDIDATES:
            t = ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points", ha=ha, va=va, fontsize=MIN_FONT,
                            color=_darker(color), annotation_clip=False)
            t.set_in_layout(False)
            bb = t.get_window_extent(renderer)
            inside = bb.x0 >= box.x0 + 1 and bb.x1 <= box.x1 - 1 and bb.y0 >= box.y0 + 1 and bb.y1 <= box.y1 - 1
            if inside and not any(_overlap(bb, o) for o in markers + avoid):
                avoid.append(bb)
                placed += 1
                break
            t.remove()
    return placed


def cost_figure(title: str, points: Sequence[SeriesPoint], score_title: str, spread: str, spread_text: str) -> "Figure":
    """The headline accuracy against total train time and against the strategy's own state size (and, when
    measured, the memory it allocated while training above the process baseline): markers at the means over
    seeds, accuracy whiskers ``spread``, cost whiskers the min–max over seeds (costs are skewed); dashed: the
    Pareto front (no other strategy both cheaper and more accurate). Log x axes when values span more than 20x,
    with readable units (ms, s; kB, MB). Points are labelled directly where a label fits (:func:`place_labels`)."""
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FuncFormatter, MaxNLocator, NullFormatter

    with style():
        ok = [p for p in points if p.score is not None and p.score.n and not math.isnan(p.score.mean)]
        panels = [("train_seconds", "total train time", _seconds, 1.0),
                  ("state_bytes", "strategy state after the last experience", _bytes, 1.0)]
        if any(p.alloc_peak_mb is not None and p.alloc_peak_mb.n and p.alloc_peak_mb.mean > 0 for p in ok):
            panels.append(("alloc_peak_mb", "memory allocated while training (MiB)", _mib, 1.0))
        fig = _figure(SINGLE, 1.75 * len(panels) + 0.55 + 0.15 * _legend_rows(SINGLE, [p.name for p in ok]))
        axes = fig.subplots(len(panels), 1, squeeze=False)[:, 0]
        labelled: list[tuple["Axes", list[tuple[float, float, str, str]]]] = []
        for ax, (attr, label, fmt, scale) in zip(axes, panels):
            xs = np.array([getattr(p, attr).mean * scale if getattr(p, attr) is not None and getattr(p, attr).n else np.nan
                           for p in ok])
            ys = np.array([100 * p.score.mean for p in ok])
            pos = xs[np.isfinite(xs) & (xs > 0)]
            log = pos.size >= 2 and pos.size == np.isfinite(xs).sum() and pos.max() / pos.min() > 20
            for p, xv, yv in zip(ok, xs, ys):
                if not np.isfinite(xv):
                    continue
                lo_x, hi_x = _range(getattr(p, attr), scale)
                if log and lo_x <= 0:  # a zero has no place on a log axis: no lower whisker
                    lo_x = xv
                xerr = [[xv - lo_x], [hi_x - xv]] if hi_x > lo_x else None
                ey = _spread(p.score, spread, 100)
                ax.errorbar(xv, yv, xerr=xerr, yerr=ey if ey > 0 else None, fmt=p.style.marker, color=p.style.color,
                            ms=5, mfc=p.style.color, mec="black", mew=0.4, elinewidth=0.7, capsize=0, zorder=3)
            ends = [(min(xv, lo) if (lo > 0 or not log) else xv, max(xv, hi))
                    for (lo, hi), xv in ((_range(getattr(p, attr), scale), xv) for p, xv in zip(ok, xs)) if np.isfinite(xv)]
            front = pareto_front(xs, ys)
            if len(front) >= 2:
                ax.step(xs[front], ys[front], where="post", linestyle="--", color="0.45", linewidth=0.8, zorder=2)
            if log:
                ax.set_xscale("log")
                ax.xaxis.set_minor_formatter(NullFormatter())
                lo, hi = min(e[0] for e in ends), max(e[1] for e in ends)
                ax.set_xlim(lo / (hi / lo) ** 0.1, hi * (hi / lo) ** 0.1)
            else:
                ax.xaxis.set_major_locator(MaxNLocator(4))
                if ends:
                    lo, hi = min(min(e[0] for e in ends), 0.0), max(e[1] for e in ends)
                    span = (hi - lo) or max(abs(hi), 1e-9)
                    ax.set_xlim(lo - 0.05 * span if lo < 0 else 0.0, hi + 0.15 * span)
            ax.xaxis.set_major_formatter(FuncFormatter(fmt))
            fy = ys[np.isfinite(ys)]
            if fy.size:
                ey = max((_spread(p.score, spread, 100) for p in ok), default=0.0)
                span = max(fy.max() - fy.min() + 2 * ey, 4.0)
                ax.set_ylim(max(0.0, fy.min() - ey - 0.15 * span), min(101.0, fy.max() + ey + 0.25 * span))
            ax.set_xlabel(label)
            ax.set_ylabel(f"{score_title} (%)")
            ax.grid(alpha=0.3, linewidth=0.5, which="major")
            labelled.append((ax, [(xv, yv, p.name, p.style.color) for p, xv, yv in zip(ok, xs, ys)]))
        fig.suptitle(_wrap(f"{title}; whiskers: {spread_text} (accuracy), min–max (cost)"))
        handles = [Line2D([], [], linestyle="none", marker=p.style.marker, color=p.style.color, mfc=p.style.color, mec="black",
                          mew=0.4, ms=5) for p in ok]
        _legend_below(fig, handles, [p.name for p in ok])
        fig.draw_without_rendering()  # final layout, then freeze it so the labels placed below stay where they fit
        fig.set_layout_engine("none")
        for ax, items in labelled:
            place_labels(fig, ax, items, [])
    return fig


# ---------------------------------------------------------------------------------------------- ranks

def critical_difference_figure(rank: RankResult, labels: dict[str, str], left_out: Sequence[tuple[str, str]],
                               metric_text: str) -> "Figure":
    """Demšar-style critical-difference diagram: average ranks (1 = best, left), CD bar, thick bars joining
    strategies whose ranks lie within CD, and a line naming every strategy left out and why.

    Laid out in inches from the measured width of the names, so that none is cut: 3.3 in wide when the names
    fit, wider (up to 6.8 in) when they need it.
    """
    with style():
        k = len(rank.names)
        order = sorted(rank.names, key=lambda n: rank.avg_rank[n])
        half = math.ceil(k / 2)
        size = 7.0
        names = {n: f"{labels.get(n, n)} ({rank.avg_rank[n]:.2f})" for n in order}
        wl = max(text_width(names[n], size) for n in order[:half])
        wr = max((text_width(names[n], size) for n in order[half:]), default=0.0)
        axis_w = 1.3
        fig_w = min(DOUBLE, max(SINGLE, wl + wr + axis_w + 0.6))
        axis_w = max(0.8, fig_w - wl - wr - 0.6)
        x0 = 0.05 + wl + 0.25
        x1 = x0 + axis_w

        def x_of(r: float) -> float:
            return x0 + (r - 1) / max(1, k - 1) * axis_w

        p = "n/a" if math.isnan(rank.p_friedman) else f"{rank.p_friedman:.3g}"
        title = _wrap(f"Average rank by {metric_text} (1 = best) over {rank.n_blocks} blocks ({rank.blocks}); "
                      f"Friedman p = {p}; Nemenyi CD at alpha = {rank.alpha}", fig_w)
        note = _wrap("Left out: " + "; ".join(f"{n} ({why})" for n, why in left_out) + ".", fig_w, MIN_FONT) if left_out else ""
        title_h = 0.14 * (title.count("\n") + 1) + 0.08
        note_h = 0.12 * (note.count("\n") + 1) + 0.06 if note else 0.0
        row = 0.17
        body_h = 0.5 + row * half + 0.08 * len(rank.groups)
        fig_h = title_h + body_h + note_h + 0.1
        from matplotlib.figure import Figure

        fig = _figure(fig_w, fig_h)
        fig.set_layout_engine("none")
        ax = fig.add_axes((0, 0, 1, 1))
        ax.set_xlim(0, fig_w)
        ax.set_ylim(0, fig_h)
        ax.set_axis_off()
        y_axis = fig_h - title_h - 0.38
        ax.text(fig_w / 2, fig_h - 0.05, title, ha="center", va="top", fontsize=8)
        ax.plot([x0, x1], [y_axis, y_axis], color="black", linewidth=0.8)
        step = max(1, math.ceil(k / max(1, int(axis_w / 0.18))))  # rank numbers at least 0.18 in apart
        for r in range(1, k + 1):
            ax.plot([x_of(r)] * 2, [y_axis, y_axis + 0.04], color="black", linewidth=0.8)
            if (r - 1) % step == 0 or r == k:
                ax.text(x_of(r), y_axis + 0.06, str(r), ha="center", va="bottom", fontsize=size)
        if rank.cd and math.isfinite(rank.cd):
            cd_w = min(rank.cd / max(1, k - 1) * axis_w, axis_w)
            ax.plot([x0, x0 + cd_w], [y_axis + 0.27, y_axis + 0.27], color=FAILED_COLOR, linewidth=1.5)
            ax.text(x0 + cd_w + 0.05, y_axis + 0.27, f"CD = {rank.cd:.2f}", ha="left", va="center", fontsize=size,
                    color=FAILED_COLOR)
        for g_i, grp in enumerate(rank.groups):
            lo, hi = x_of(rank.avg_rank[grp[0]]), x_of(rank.avg_rank[grp[-1]])
            y = y_axis - 0.07 - 0.06 * g_i
            ax.plot([lo - 0.02, hi + 0.02], [y, y], color="black", linewidth=2.5, solid_capstyle="round")
        top = y_axis - 0.12 - 0.06 * len(rank.groups)
        for i, name in enumerate(order):
            xr = x_of(rank.avg_rank[name])
            left = i < half
            y = top - row * (i if left else k - 1 - i)
            x_text = x0 - 0.12 if left else x1 + 0.12
            ax.plot([xr, xr, x_text], [y_axis, y, y], color="black", linewidth=0.6)
            ax.text(x_text + (-0.04 if left else 0.04), y, names[name], ha="right" if left else "left", va="center",
                    fontsize=size)
        if note:
            ax.text(0.05, 0.05, note, ha="left", va="bottom", fontsize=MIN_FONT, color="0.25")
    return fig


# ---------------------------------------------------------------------------------------------- tune

def tune_scores_figure(title: str, entries: Sequence[TuneEntry], colors: dict[str, str], spread_text: str) -> "Figure":
    """Per strategy, horizontal bars: score under the conventional protocol (tuned and reported on one stream,
    hatched) and under the two-phase protocol (whiskers: the spread of the phase-2 seeds)."""
    from matplotlib.patches import Patch

    with style():
        k = len(entries)
        fig = _figure(SINGLE, 1.2 + 0.32 * k)
        ax = fig.add_subplot()
        y = np.arange(k)
        h = 0.38
        hi = 1.0
        for i, e in enumerate(entries):
            c = colors.get(e.name, "C0")
            if np.isfinite(e.conventional):
                ax.barh(i - h / 2, 100 * e.conventional, h, color=c, alpha=0.45, edgecolor="black", linewidth=0.4, hatch="///")
                hi = max(hi, 100 * e.conventional)
            if np.isfinite(e.two_phase):
                err = 100 * e.extra.get("spread", 0.0) if np.isfinite(e.extra.get("spread", np.nan)) else 0.0
                ax.barh(i + h / 2, 100 * e.two_phase, h, xerr=err if err > 0 else None, color=c, edgecolor="black",
                        linewidth=0.4, error_kw={"elinewidth": 0.8, "capsize": 2})
                hi = max(hi, 100 * e.two_phase + err)
        ax.set_yticks(y, [e.name for e in entries])
        ax.set_ylim(k - 0.5, -0.5)
        ax.set_xlim(0, hi * 1.05)
        ax.set_xlabel("score (%)")
        ax.grid(axis="x", alpha=0.3, linewidth=0.5)
        fig.suptitle(_wrap(f"{title}: conventional vs two-phase; whiskers: {spread_text}"))
        _legend_below(fig, [Patch(facecolor="0.7", edgecolor="black", hatch="///", alpha=0.6), Patch(facecolor="0.5", edgecolor="black")],
                      ["conventional (tuned on D_E)", "two-phase (D_HT, then D_E)"])
    return fig


def tune_rankings_figure(title: str, entries: Sequence[TuneEntry], colors: dict[str, str]) -> "Figure":
    """The two rankings side by side (1 = best), a line per strategy joining its two ranks; the margins hold the
    measured names, so none is cut."""
    with style():
        k = len(entries)
        size = 7.0
        left = {e.name: f"{e.name} ({100 * e.conventional:.1f})" for e in entries}
        right = {e.name: f"{e.name} ({100 * e.two_phase:.1f})" for e in entries}
        wl = max(text_width(t, size) for t in left.values())
        wr = max(text_width(t, size) for t in right.values())
        fig_w = min(DOUBLE, max(SINGLE, wl + wr + 1.6))
        fig = _figure(fig_w, 0.9 + 0.22 * max(k, 2))
        ax = fig.add_subplot()
        gap = max(1.0, fig_w - wl - wr - 0.9)  # inches between the two columns of points
        for e in entries:
            c = colors.get(e.name, "C0")
            if np.isfinite(e.rank_conventional) and np.isfinite(e.rank_two_phase):
                ax.plot([0, 1], [e.rank_conventional, e.rank_two_phase], marker="o", color=c, linewidth=1.5, ms=4)
            if np.isfinite(e.rank_conventional):
                ax.plot([0], [e.rank_conventional], marker="o", color=c, ms=4)
                ax.text(-0.06 / gap, e.rank_conventional, left[e.name], ha="right", va="center", fontsize=size)
            if np.isfinite(e.rank_two_phase):
                ax.plot([1], [e.rank_two_phase], marker="o", color=c, ms=4)
                ax.text(1 + 0.06 / gap, e.rank_two_phase, right[e.name], ha="left", va="center", fontsize=size)
        ax.set_xlim(-(wl + 0.12) / gap, 1 + (wr + 0.12) / gap)
        ax.set_ylim(k + 0.5, 0.5)
        ax.set_xticks([0, 1], ["conventional", "two-phase"])
        ax.set_yticks([])
        for side in ("top", "right", "left"):
            ax.spines[side].set_visible(False)
        fig.suptitle(_wrap(f"{title}: rank (1 = best, top) under the two protocols", fig_w))
    return fig
