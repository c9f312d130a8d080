"""Figures checked on properties through matplotlib's renderer (no pixel snapshots): no overlapping text in the
cost plot, legends outside the axes, nothing cut at the figure edge, readable units on log axes, the band choice
honoured (edges recomputed with numpy/scipy), whiskers inside the axes, one style per strategy in every figure."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats

from clbench.reports.data import Style, load_run, strategy_styles
from clbench.reports.options import ReportOptions
from clbench.reports.plots import (MIN_FONT, SINGLE, SeriesPoint, cost_figure, critical_difference_figure, figure_bytes,
                                   final_bars_figure)
from clbench.reports.report import build_report
from clbench.stats import aggregate, friedman_nemenyi
from report_records import lower_triangular, record, wide_comparison, write_run


def _texts(fig):
    """Every text the renderer draws: visible, non-empty, tick labels only for ticks inside the view."""
    from matplotlib.text import Text

    fig.canvas.draw()
    ticks = set()
    out = []
    for ax in fig.axes:
        for axis, lim in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
            lo, hi = min(lim), max(lim)
            for lab in axis.get_majorticklabels() + axis.get_minorticklabels():
                ticks.add(id(lab))
                pos = lab.get_position()[0 if axis is ax.xaxis else 1]
                if ax.axison and lab.get_visible() and lab.get_text().strip() and lo - 1e-12 <= pos <= hi + 1e-12:
                    out.append(lab)
    for t in fig.findobj(Text):
        if id(t) not in ticks and t.get_visible() and t.get_text().strip():
            out.append(t)
    return out


def _boxes(fig, texts):
    r = fig.canvas.get_renderer()
    return [(t.get_text(), t.get_window_extent(r)) for t in texts]


def _overlaps(boxes):
    return [(a, b) for (a, ba), (b, bb) in itertools.combinations(boxes, 2)
            if ba.x0 < bb.x1 - 0.5 and bb.x0 < ba.x1 - 0.5 and ba.y0 < bb.y1 - 0.5 and bb.y0 < ba.y1 - 0.5]


def _agg(values):
    return aggregate(values)


def _points(n: int, seed: int = 0, log_times: bool = True) -> list[SeriesPoint]:
    """``n`` strategies, several sharing (almost) the same accuracy and cost, names of different lengths."""
    rng = np.random.default_rng(seed)
    styles = strategy_styles([f"s{i}" for i in range(n)])
    pts = []
    for i in range(n):
        acc = 0.6 + 0.3 * (i % 3) / 2 + rng.normal(0, 0.01, 3)  # three clusters of similar accuracy
        secs = (10 ** (i % 4 - 2) if log_times else 1 + i % 4) * (1 + rng.normal(0, 0.05, 3) ** 2)
        state = 2.0 ** (10 + 2 * (i % 3)) * np.ones(3)
        pts.append(SeriesPoint(["finetune", "replay", "ewc_lambda_big", "kvb", "acil", "si", "lwf", "joint"][i % 8]
                               + ("" if i < 8 else f"_{i}"), styles[f"s{i}"], _agg(acc), _agg(acc / 3), _agg(secs),
                               _agg(state), _agg(np.zeros(3)), 0, 3))
    return pts


@pytest.mark.parametrize("n, log_times", [(3, True), (8, True), (8, False), (12, True)])
def test_cost_figure_text_never_overlaps_and_legend_is_outside(n, log_times):
    pts = _points(n, n, log_times)
    fig = cost_figure("Split toy, class-IL, 5 experiences", pts, "ACC", "std", "±1 s.d. over seeds")
    texts = _texts(fig)
    boxes = _boxes(fig, texts)
    assert not _overlaps(boxes), _overlaps(boxes)[:5]
    names = {t for t, _ in boxes}
    assert all(p.name in names for p in pts)  # the legend (at least) names each
    fb = fig.bbox
    for text, b in boxes:  # nothing cut at the figure's edge
        assert b.x0 >= fb.x0 - 0.5 and b.x1 <= fb.x1 + 0.5 and b.y0 >= fb.y0 - 0.5 and b.y1 <= fb.y1 + 0.5, text
    r = fig.canvas.get_renderer()
    assert len(fig.legends) == 1
    leg = fig.legends[0].get_window_extent(r)
    for ax in fig.axes:
        a = ax.get_window_extent(r)
        assert not (leg.x0 < a.x1 and a.x0 < leg.x1 and leg.y0 < a.y1 and a.y0 < leg.y1), "legend overlaps an axes"
    assert fig.get_figwidth() == pytest.approx(SINGLE)
    assert min(t.get_fontsize() for t in texts) >= MIN_FONT
    time_ax = fig.axes[0]
    labels = [t.get_text() for t in texts if t in time_ax.get_xticklabels()]
    assert labels and not any(s.replace(".", "").strip("0 ") == "" and s != "0" for s in labels)  # no "0.00"
    if log_times:
        assert time_ax.get_xscale() == "log" and all(("ms" in s or " s" in s) for s in labels), labels
    # panels: ACC against time and state; no process-RSS panel (alloc. peak is zero here, so no memory panel)
    assert [ax.get_xlabel() for ax in fig.axes] == ["total train time", "strategy state after the last experience"]


def test_cost_figure_memory_panel_shows_strategy_allocation():
    pts = _points(3)
    for i, p in enumerate(pts):
        p.alloc_peak_mb = _agg(np.array([1.0, 1.2, 0.8]) * 10 ** i)
    fig = cost_figure("t", pts, "ACC", "ci", "95% CI over seeds")
    assert fig.axes[2].get_xlabel() == "memory allocated while training (MiB)"
    xs = sorted(line.get_xdata()[0] for line in fig.axes[2].get_lines() if len(line.get_xdata()) == 1)
    assert xs == pytest.approx([1.0, 10.0, 100.0])


def test_bars_whiskers_are_never_clipped():
    styles = strategy_styles(["a", "b", "c"])
    pts = [SeriesPoint("a", styles["a"], _agg([0.99, 0.80, 0.98]), _agg([0.01, 0.2, -0.1]), None, None, None, 0, 3),
           SeriesPoint("a much longer strategy name", styles["b"], _agg([0.5, 0.52, 0.9]), _agg([0.3, 0.1, 0.2]), None,
                       None, None, 1, 4),
           SeriesPoint("c", styles["c"], None, None, None, None, None, 3, 3)]
    fig = final_bars_figure("t", pts, "ACC", "std", "±1 s.d. over seeds")
    fig.canvas.draw()
    for ax, key in zip(fig.axes, ("score", "forgetting")):
        lo, hi = ax.get_xlim()
        for p in pts:
            a = getattr(p, key)
            if a is None:
                continue
            m, e = 100 * a.mean, 100 * a.std
            assert lo <= m - e and m + e <= hi, (key, p.name, lo, hi, m, e)
    assert hi_of(fig.axes[0]) > 100  # a whisker past 100 % is shown, not cut at 100
    texts = [t.get_text() for t in _texts(fig)]
    assert "failed" in texts and any("1/4 failed" in t for t in texts)
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == [p.name for p in pts]  # horizontal bars: names read


def hi_of(ax) -> float:
    return ax.get_xlim()[1]


def test_critical_difference_figure_names_what_was_left_out():
    rank = friedman_nemenyi({"a": [0.9, 0.8], "b": [0.7, 0.75], "c": [0.6, 0.5]}, blocks="benchmarks: x, y")
    fig = critical_difference_figure(rank, {"a": "a", "b": "b", "c": "c†"}, [("plug1", "finished on 1 of 2 benchmarks"),
                                                                          ("plug2", "every cell failed on y")], "ACC")
    text = " ".join(t.get_text() for t in _texts(fig)).replace("\n", " ")
    assert "Left out: plug1 (finished on 1 of 2 benchmarks); plug2 (every cell failed on y)." in text
    assert "c† (3.00)" in text
    boxes = _boxes(fig, _texts(fig))
    for t, b in boxes:
        assert b.x0 >= -0.5 and b.x1 <= fig.bbox.x1 + 0.5, t


def test_pdf_is_vector_with_embedded_truetype_fonts():
    fig = cost_figure("t", _points(3), "ACC", "std", "s.d.")
    pdf = figure_bytes(fig, "pdf")
    assert pdf.startswith(b"%PDF-") and b"/FontFile2" in pdf and b"/Subtype /Image" not in pdf
    assert figure_bytes(fig, "pdf") == pdf  # no creation date: byte-stable


# ---------------------------------------------------------------------------------------------- through the report

SIZES = [100, 50, 150]


@pytest.fixture
def hand_run(tmp_path):
    recs = []
    for seed in range(3):
        for s, base in (("a", 0.3), ("b", 0.6), ("c", 0.6)):  # b and c coincide: their curves must stay distinguishable
            R = lower_triangular([base + 0.1 * seed, 0.7 - 0.05 * seed, 0.95], diag=0.97 - 0.01 * seed)
            recs.append(record("toy", s, seed, R, test_sizes=SIZES, train_seconds=1 + seed + (s == "a"),
                               state_bytes=2**12 * (1 + "abc".index(s))))
        recs.append(record("other", "a", seed, lower_triangular([0.5, 0.6 + 0.01 * seed, 0.9])))
        recs.append(record("other", "b", seed, lower_triangular([0.55, 0.6, 0.9 - 0.02 * seed])))
    return load_run(write_run(tmp_path / "hand", recs)), recs


def _seen(recs, strategy):
    """Seeds x steps accuracy on all seen test data, computed here: sum_{j<=i} R[i,j] n_j / sum_{j<=i} n_j."""
    n = np.asarray(SIZES, float)
    out = []
    for r in recs:
        if r["strategy"] == strategy and r["benchmark"] == "toy":
            R = np.asarray(r["accuracy"])
            out.append([np.dot(R[i, :i + 1], n[:i + 1]) / n[:i + 1].sum() for i in range(len(n))])
    return 100 * np.asarray(out)


def _band(fig, color):
    from matplotlib.collections import PolyCollection
    from matplotlib.colors import to_hex

    ax = fig.axes[0]
    polys = [c for c in ax.collections if isinstance(c, PolyCollection) and to_hex(c.get_facecolor()[0]) == color]
    if not polys:
        return None
    verts = polys[0].get_paths()[0].vertices
    xs = np.unique(verts[:, 0].round(9))
    lo = np.array([verts[np.isclose(verts[:, 0], x), 1].min() for x in xs])
    hi = np.array([verts[np.isclose(verts[:, 0], x), 1].max() for x in xs])
    return lo, hi


@pytest.mark.parametrize("band", ["std", "ci", "minmax", "none", "auto"])
def test_seen_accuracy_band_choice_is_honoured(hand_run, band):
    run, recs = hand_run
    _, out, comp = build_report([run], ReportOptions(band=band, benchmarks=("toy",), formats=("html",)),
                              keep_figures=True, render=False)
    fig = out.figures["seen_accuracy_toy"]
    key = comp.strategies[0]
    got = _band(fig, comp.styles[key].color)
    s = _seen(recs, "a")
    mean = s.mean(0)
    if band == "none":
        assert got is None
        return
    expect = {"std": (mean - s.std(0, ddof=1), mean + s.std(0, ddof=1)),
              "auto": (mean - s.std(0, ddof=1), mean + s.std(0, ddof=1)),  # 3 seeds: auto is std
              "minmax": (s.min(0), s.max(0))}
    if band == "ci":
        h = stats.t.ppf(0.975, 2) * stats.sem(s, axis=0)
        expect["ci"] = (mean - h, mean + h)
    lo, hi = got
    ok = expect[band][1] - expect[band][0] > 1e-9  # where every seed agrees the band has no width
    assert lo[ok] == pytest.approx(expect[band][0][ok]) and hi[ok] == pytest.approx(expect[band][1][ok])
    caption = next(b.caption for b in out.blocks if getattr(b, "name", "") == "seen_accuracy_toy")
    word = {"std": "std over seeds", "auto": "std over seeds", "ci": "95% CI", "minmax": "min–max over seeds"}[band]
    assert f"band = {word}" in caption


def test_curves_are_distinguishable_and_each_strategy_keeps_its_style(hand_run):
    from matplotlib.colors import to_hex

    run, _ = hand_run
    _, out, comp = build_report([run], ReportOptions(formats=("html",)), keep_figures=True, render=False)
    seen = out.figures["seen_accuracy_toy"]
    lines = [ln for ln in seen.axes[0].get_lines() if ln.get_label() and not ln.get_label().startswith("_")]
    assert len({(ln.get_marker(), ln.get_linestyle()) for ln in lines}) == len(lines) == 3
    assert all(ln.get_markerfacecolor() in ("white", "w", (1.0, 1.0, 1.0, 1.0)) for ln in lines)  # hollow: overlaps show
    r = seen.canvas.get_renderer()
    leg = seen.legends[0].get_window_extent(r)
    ax = seen.axes[0].get_window_extent(r)
    assert leg.y1 <= ax.y0  # the legend is below the axes, outside the data
    assert seen._suptitle.get_text().startswith("Toy digits, class-IL, 3 experiences")
    # the same colour for a strategy in the curves, the bars and the cost plot, on every benchmark
    for key in comp.strategies:
        label, color = comp.label(key), comp.styles[key].color
        curve = next(ln for ln in lines if ln.get_label().startswith(label + " "))
        assert to_hex(curve.get_color()) == color
        bars = out.figures["final_bars_toy"].axes[0].patches
        assert color in {to_hex(p.get_facecolor()) for p in bars}
        other = [ln for ln in out.figures["seen_accuracy_other"].axes[0].get_lines() if ln.get_label().startswith(label + " ")]
        assert not other or to_hex(other[0].get_color()) == color
    cost = out.figures["cost_toy"]
    handles = cost.legends[0].legend_handles
    assert [to_hex(h.get_color()) for h in handles] == [comp.styles[k].color for k in comp.strategies]
    assert len({h.get_marker() for h in handles}) == 3
    for name in ("seen_accuracy_toy", "final_bars_toy", "cost_toy", "critical_difference"):
        fig = out.figures[name]
        texts = _texts(fig)
        assert fig.get_figwidth() == pytest.approx(SINGLE), name
        assert min(t.get_fontsize() for t in texts) >= MIN_FONT, name
        assert not _overlaps(_boxes(fig, texts)), name


def test_styles_are_distinct_for_many_strategies():
    st = strategy_styles([f"s{i}" for i in range(12)])
    assert len({s.color for s in st.values()}) == 12
    assert len({(s.marker, s.linestyle) for s in st.values()}) == 12
    assert all(isinstance(s, Style) for s in st.values()) and not math.isnan(len(st))


@pytest.mark.slow  # draws some twenty figures
def test_every_figure_of_a_wide_comparison_keeps_its_text_inside_and_apart(tmp_path):
    """Eight strategies with long labels, three benchmarks, a tune run: no figure cuts a text at its edge or lets two
    texts overlap (titles, tick labels, legends, direct labels, CD names)."""
    a, b = wide_comparison(tmp_path)
    _, out, _ = build_report([load_run(a), load_run(b)], ReportOptions(formats=("html",)), keep_figures=True, render=False)
    problems = []
    for name, fig in out.figures.items():
        texts = _texts(fig)
        boxes = _boxes(fig, texts)
        fb = fig.bbox
        cut = [t for t, bb in boxes if bb.x0 < fb.x0 - 0.5 or bb.x1 > fb.x1 + 0.5 or bb.y0 < fb.y0 - 0.5 or bb.y1 > fb.y1 + 0.5]
        if cut:
            problems.append((name, "cut", cut[:4]))
        over = _overlaps(boxes)
        if over:
            problems.append((name, "overlap", over[:4]))
        if fig.legends:
            r = fig.canvas.get_renderer()
            leg = fig.legends[0].get_window_extent(r)
            if leg.x0 < fb.x0 - 0.5 or leg.x1 > fb.x1 + 0.5:
                problems.append((name, "legend wider than the figure", None))
        if min(t.get_fontsize() for t in texts) < MIN_FONT:
            problems.append((name, "font", None))
    assert not problems, problems
