"""Figures of the report (matplotlib object API, Agg; no pyplot state, nothing at import time).

Every function takes already-aggregated numbers and returns a :class:`matplotlib.figure.Figure`;
:func:`figure_bytes` renders one to PNG or PDF bytes.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from clbench.stats import MeanCI, RankResult, mean_ci, pareto_front

if TYPE_CHECKING:
    from matplotlib.figure import Figure


@dataclass
class Curve:
    """Mean and CI half-width of one series at x = 1..T (NaN half-width: no band)."""

    name: str
    color: str
    mean: np.ndarray
    half_width: np.ndarray
    n: int


@dataclass
class SeriesPoint:
    """Aggregates of one series for the bar and scatter figures (``None``: every cell failed)."""

    name: str
    color: str
    acc: MeanCI | None
    forgetting: MeanCI | None
    train_seconds: MeanCI | None
    peak_memory_mb: MeanCI | None
    state_mib: MeanCI | None
    n_failed: int = 0
    n_total: int = 0


@dataclass
class TuneEntry:
    """One strategy of a tune run: the two protocols' scores (fraction) and ranks (1 = best)."""

    name: str
    conventional: float
    two_phase: float
    rank_conventional: float = float("nan")
    rank_two_phase: float = float("nan")
    extra: dict = field(default_factory=dict)


def _figure(width: float, height: float) -> "Figure":
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained", dpi=100)


def series_colors(names: Sequence[str]) -> dict[str, str]:
    """A stable colour per series name (tab10, then tab20 beyond ten)."""
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    cmap = colormaps["tab10" if len(names) <= 10 else "tab20"]
    return {n: to_hex(cmap(i % cmap.N)) for i, n in enumerate(names)}


def figure_bytes(fig: "Figure", fmt: str, dpi: int = 110) -> bytes:
    """PNG or PDF bytes of ``fig`` (PDF metadata without a creation date, so reruns are byte-stable)."""
    buf = io.BytesIO()
    meta = {"CreationDate": None} if fmt == "pdf" else {"Software": None}
    fig.savefig(buf, format=fmt, dpi=dpi, metadata=meta)
    return buf.getvalue()


def _pct(x: float | None) -> float:
    return float("nan") if x is None else 100.0 * x


def _err(ci: MeanCI | None, scale: float = 1.0) -> float:
    if ci is None or math.isnan(ci.half_width):
        return 0.0
    return scale * ci.half_width


def seen_accuracy_figure(title: str, curves: Sequence[Curve]) -> "Figure":
    r"""Accuracy on the union of the seen test sets after each experience, a_i (percent), mean ± 95% CI band."""
    fig = _figure(6.4, 4.0)
    ax = fig.add_subplot()
    for c in curves:
        x = np.arange(1, len(c.mean) + 1)
        ax.plot(x, 100 * c.mean, marker="o", ms=3.5, color=c.color, label=f"{c.name} (n={c.n})")
        hw = np.nan_to_num(c.half_width, nan=0.0)
        if np.any(hw > 0):
            ax.fill_between(x, 100 * (c.mean - hw), 100 * (c.mean + hw), color=c.color, alpha=0.18, linewidth=0)
    T = max((len(c.mean) for c in curves), default=1)
    ax.set_xticks(np.arange(1, T + 1))
    ax.set_xlabel("after training on experience")
    ax.set_ylabel("accuracy on seen test data (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.set_title(f"{title}\nmean over seeds, band = 95% CI (Student t)", fontsize=10)
    if curves:
        ax.legend(fontsize=8, loc="best")
    return fig


def accuracy_matrix_figure(title: str, matrices: Sequence[tuple[str, np.ndarray, int]]) -> "Figure":
    """One heatmap per series of the mean accuracy matrix R[i, j] (percent; rows: trained, columns: evaluated)."""
    k = max(1, len(matrices))
    ncols = min(4, k)
    nrows = math.ceil(k / ncols)
    fig = _figure(3.0 * ncols + 0.8, 2.9 * nrows + 0.6)
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
        if T <= 12:
            for i in range(T):
                for j in range(R.shape[1]):
                    v = R[i, j]
                    ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=7 if T <= 8 else 5.5,
                            color="white" if v < 60 else "black")
        ticks = np.arange(T)
        ax.set_xticks(ticks, [str(t + 1) for t in ticks], fontsize=7)
        ax.set_yticks(ticks, [str(t + 1) for t in ticks], fontsize=7)
        ax.set_xlabel("evaluated experience j", fontsize=8)
        ax.set_ylabel("after experience i", fontsize=8)
        ax.set_title(f"{name} (n={n})", fontsize=9)
    if im is not None:
        fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.8, label="accuracy (%)")
    fig.suptitle(f"{title}: accuracy matrix R[i, j], mean over seeds", fontsize=10)
    return fig


def final_bars_figure(title: str, points: Sequence[SeriesPoint]) -> "Figure":
    """Final accuracy (ACC) and forgetting (percent) per series, bars = mean, whiskers = 95% CI; failed cells labelled."""
    fig = _figure(max(6.4, 1.1 * len(points) + 3), 3.9)
    axes = fig.subplots(1, 2)
    x = np.arange(len(points))
    for ax, attr, label in ((axes[0], "acc", "final accuracy ACC (%)"), (axes[1], "forgetting", "forgetting (%)")):
        top = 0.0
        for i, p in enumerate(points):
            ci: MeanCI | None = getattr(p, attr)
            if ci is None or math.isnan(ci.mean):  # None: every cell failed; NaN: undefined (e.g. one experience)
                ax.bar(i, 0, color="none")
                ax.text(i, 1, "failed" if ci is None else "n/a", ha="center", va="bottom", rotation=90,
                        color="#b00020" if ci is None else "grey", fontsize=8, fontweight="bold")
                continue
            ax.bar(i, 100 * ci.mean, yerr=_err(ci, 100), capsize=4, color=p.color, alpha=0.85, edgecolor="black", linewidth=0.5)
            top = max(top, 100 * ci.mean + _err(ci, 100))
            if p.n_failed:
                ax.text(i, 100 * ci.mean + _err(ci, 100) + 1, f"{p.n_failed}/{p.n_total} failed", ha="center", va="bottom",
                        color="#b00020", fontsize=7)
        ax.set_xticks(x, [p.name for p in points], rotation=30, ha="right", fontsize=8)
        ax.set_ylabel(label)
        ax.axhline(0, color="black", linewidth=0.6)
        if attr == "acc":
            ax.set_ylim(0, 100)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"{title}: mean over seeds, whiskers = 95% CI (Student t)", fontsize=10)
    return fig


def pareto_figure(title: str, points: Sequence[SeriesPoint]) -> "Figure":
    """ACC against train seconds, peak memory and state size; the Pareto front (max ACC, min cost) is drawn dashed."""
    fig = _figure(12.5, 4.0)
    axes = fig.subplots(1, 3)
    ok = [p for p in points if p.acc is not None and not math.isnan(p.acc.mean)]
    specs = (("train_seconds", "train time (s, all experiences)"), ("peak_memory_mb", "peak memory (MiB)"),
             ("state_mib", "strategy state (MiB)"))
    for ax, (attr, label) in zip(axes, specs):
        xs = np.array([getattr(p, attr).mean if getattr(p, attr) is not None else np.nan for p in ok])
        ys = np.array([100 * p.acc.mean for p in ok])
        for p, xv, yv in zip(ok, xs, ys):
            ax.errorbar(xv, yv, xerr=_err(getattr(p, attr)), yerr=_err(p.acc, 100), fmt="o", color=p.color,
                        ms=6, capsize=3, label=p.name)
            ax.annotate(p.name, (xv, yv), textcoords="offset points", xytext=(5, 4), fontsize=7)
        front = pareto_front(xs, ys)
        if front:
            fx, fy = xs[front], ys[front]
            ax.step(fx, fy, where="post", linestyle="--", color="grey", linewidth=1, label="Pareto front")
            ax.scatter(fx, fy, s=140, facecolors="none", edgecolors="grey", linewidths=1)
        finite = xs[np.isfinite(xs) & (xs > 0)]
        if finite.size >= 2 and finite.max() / finite.min() > 20:
            ax.set_xscale("log")
        ax.margins(x=0.18, y=0.1)
        ax.set_xlabel(label)
        ax.set_ylabel("final accuracy ACC (%)")
        ax.grid(alpha=0.3)
    if ok:
        handles, labels = axes[0].get_legend_handles_labels()
        axes[0].legend(handles, labels, fontsize=7, loc="best")
    fig.suptitle(f"{title}: accuracy vs cost (mean ± 95% CI); dashed = Pareto front", fontsize=10)
    return fig


def critical_difference_figure(rank: RankResult) -> "Figure":
    """Demšar-style critical-difference diagram: average ranks (1 = best, left), CD bar, bars joining groups within CD."""
    k = len(rank.names)
    order = sorted(rank.names, key=lambda n: rank.avg_rank[n])
    fig = _figure(8.5, 1.3 + 0.3 * math.ceil(k / 2))
    ax = fig.add_subplot()
    w = max(1, k - 1)
    ax.set_xlim(1 - 0.75 * w, k + 0.75 * w)
    ax.set_axis_off()
    y_axis = 0.8
    ax.plot([1, k], [y_axis, y_axis], color="black", linewidth=1)
    for r in range(1, k + 1):
        ax.plot([r, r], [y_axis, y_axis + 0.03], color="black", linewidth=1)
        ax.text(r, y_axis + 0.05, str(r), ha="center", va="bottom", fontsize=9)
    if rank.cd and math.isfinite(rank.cd):
        ax.plot([1, 1 + rank.cd], [0.97, 0.97], color="#b00020", linewidth=2)
        ax.text(1 + rank.cd / 2, 0.985, f"CD = {rank.cd:.2f}", ha="center", va="bottom", fontsize=8, color="#b00020")
    half = math.ceil(k / 2)
    step = 0.65 / max(1, half)
    for i, name in enumerate(order):
        r = rank.avg_rank[name]
        left = i < half
        y = y_axis - 0.1 - step * (i if left else k - 1 - i)
        x_text = 1 - 0.12 * w if left else k + 0.12 * w
        ax.plot([r, r, x_text], [y_axis, y, y], color="black", linewidth=0.8)
        ax.text(x_text + (-0.02 if left else 0.02) * w, y, f"{name} ({r:.2f})", ha="right" if left else "left",
                va="center", fontsize=8)
    for g_i, grp in enumerate(rank.groups):
        lo, hi = rank.avg_rank[grp[0]], rank.avg_rank[grp[-1]]
        y = y_axis - 0.045 - 0.03 * g_i
        ax.plot([lo - 0.03, hi + 0.03], [y, y], color="black", linewidth=3, solid_capstyle="round")
    ax.set_ylim(y_axis - 0.18 - step * (half - 1), 1.02)
    p = "n/a" if math.isnan(rank.p_friedman) else f"{rank.p_friedman:.3g}"
    fig.suptitle(f"average rank by ACC (1 = best) over {rank.n_blocks} blocks: {rank.blocks}\n"
                 f"Friedman p = {p}; Nemenyi critical difference at alpha = {rank.alpha}; "
                 f"thick bars join strategies not significantly different", fontsize=9)
    return fig


def tune_scores_figure(title: str, entries: Sequence[TuneEntry], colors: dict[str, str]) -> "Figure":
    """Per strategy: score under the conventional protocol (tuned and reported on one stream) vs the two-phase protocol."""
    fig = _figure(max(6.0, 1.0 * len(entries) + 3), 3.9)
    ax = fig.add_subplot()
    x = np.arange(len(entries))
    w = 0.38
    conv = [100 * e.conventional for e in entries]
    two = [100 * e.two_phase for e in entries]
    ax.bar(x - w / 2, conv, w, color=[colors.get(e.name, "C0") for e in entries], alpha=0.45, edgecolor="black",
           linewidth=0.5, hatch="//", label="conventional (tune = report stream)")
    errs = []
    for e in entries:
        ci = mean_ci(e.extra.get("per_seed") or [])
        errs.append(_err(ci, 100) if ci.n and abs(ci.mean - e.two_phase) < 1e-9 else 0.0)
    ax.bar(x + w / 2, two, w, yerr=errs, capsize=3, color=[colors.get(e.name, "C0") for e in entries], alpha=0.95,
           edgecolor="black", linewidth=0.5, label="two-phase (phase 2 on D_E)")
    for xi, c, t in zip(x, conv, two):
        if np.isfinite(c) and np.isfinite(t):
            ax.text(xi, min(max(c, t) + 1.5, 101), f"{c - t:+.1f}", ha="center", va="bottom", fontsize=7,
                    bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.85})
    ax.set_xticks(x, [e.name for e in entries], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("score (%)")
    ax.set_ylim(0, 118)
    ax.set_yticks(range(0, 101, 20))
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper center", ncol=2, framealpha=1)
    ax.set_title(f"{title}: conventional vs two-phase score\n(label = conventional minus two-phase, pp)", fontsize=10)
    return fig


def tune_rankings_figure(title: str, entries: Sequence[TuneEntry], colors: dict[str, str]) -> "Figure":
    """The two rankings side by side (1 = best), a line per strategy joining its two ranks."""
    k = len(entries)
    fig = _figure(6.0, 1.2 + 0.45 * max(k, 2))
    ax = fig.add_subplot()
    for e in entries:
        c = colors.get(e.name, "C0")
        if np.isfinite(e.rank_conventional) and np.isfinite(e.rank_two_phase):
            ax.plot([0, 1], [e.rank_conventional, e.rank_two_phase], marker="o", color=c, linewidth=2)
        if np.isfinite(e.rank_conventional):
            ax.plot([0], [e.rank_conventional], marker="o", color=c)
            ax.text(-0.04, e.rank_conventional, f"{e.name} ({100 * e.conventional:.1f})", ha="right", va="center", fontsize=8)
        if np.isfinite(e.rank_two_phase):
            ax.plot([1], [e.rank_two_phase], marker="o", color=c)
            ax.text(1.04, e.rank_two_phase, f"{e.name} ({100 * e.two_phase:.1f})", ha="left", va="center", fontsize=8)
    ax.set_xlim(-0.9, 1.9)
    ax.set_ylim(k + 0.5, 0.5)
    ax.set_xticks([0, 1], ["conventional", "two-phase"])
    ax.set_yticks(range(1, k + 1))
    ax.set_ylabel("rank (1 = best)")
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(f"{title}: rankings under the two protocols", fontsize=10)
    return fig
