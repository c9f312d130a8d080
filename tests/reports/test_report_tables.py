"""The main table (strategies x benchmark groups), per-benchmark tables, undefined p-values, † marks and escaping,
on hand-made records whose numbers are recomputed here with numpy/scipy."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from clbench.reports.data import build_comparison, load_run
from clbench.reports.options import ReportOptions
from clbench.reports.report import build_report
from clbench.reports.tables import main_table, pairwise_table, summary_table
from report_records import lower_triangular, record, write_run

BLURRY = {"blurry": {"blurry_ratio": 0.1, "disjoint_ratio": 0.5, "disjoint_classes": [0, 1]}}
SIZES_B = [300, 50, 50]  # blurry: the first experience holds most classes' test data
LAST = {  # strategy -> seed -> last row of R on toy_a
    "a": [[0.9, 0.8, 0.95], [0.85, 0.82, 0.97], [0.88, 0.78, 0.99]],
    "b": [[0.5, 0.6, 0.96], [0.4, 0.65, 0.98], [0.55, 0.5, 0.97]],
    "c": [[0.7, 0.7, 0.9], [0.72, 0.69, 0.93], [0.71, 0.7, 0.95]],
}
LAST_B = {"a": [[0.6, 0.9, 0.9], [0.62, 0.88, 0.91], [0.61, 0.9, 0.9]],
          "b": [[0.8, 0.5, 0.6], [0.79, 0.52, 0.6], [0.81, 0.5, 0.62]]}


def _runs(tmp_path, label_b: str = "b"):
    recs = []
    for s, rows in LAST.items():
        for seed, row in enumerate(rows):
            recs.append(record("toy_a", label_b if s == "b" else s, seed, lower_triangular(row),
                               strat_entry={"name": s}))
    for s, rows in LAST_B.items():
        for seed, row in enumerate(rows):
            recs.append(record("toy_b", label_b if s == "b" else s, seed, lower_triangular(row), strat_entry={"name": s},
                               test_sizes=SIZES_B, stream_params=BLURRY))
    return [load_run(write_run(tmp_path / "hand", recs))]


def _expected(rows, sizes=None):
    """ACC and A_last per seed from the last rows, computed here."""
    sizes = np.asarray(sizes or [100, 100, 100], float)
    acc = [np.mean(r) for r in rows]
    a_last = [np.dot(r, sizes) / sizes.sum() for r in rows]
    return 100 * np.array(acc), 100 * np.array(a_last)


def test_main_table_groups_spread_best_and_second(tmp_path):
    comp = build_comparison(_runs(tmp_path), ReportOptions())
    t = main_table(comp, "std")
    # toy_b is blurry: A_last is the headline and comes first, ACC last; toy_a shows ACC and AIA
    assert t.groups == [("", 1), ("toy_a", 2), ("toy_b", 3)]
    assert t.columns == ["Strategy", "ACC", "AIA", "A_last", "AIA", "ACC"]
    assert [r[0] for r in t.rows] == ["a", "b", "c"]
    means = {}
    for r, s in enumerate(["a", "b", "c"]):
        acc, _ = _expected(LAST[s])
        assert t.rows[r][1] == f"{acc.mean():.2f} ± {acc.std(ddof=1):.2f}"
        means[s] = acc.mean()
    order = sorted(means, key=means.get, reverse=True)
    assert (["a", "b", "c"].index(order[0]), 1) in t.best and (["a", "b", "c"].index(order[1]), 1) in t.second
    assert len([c for c in t.best if c[1] == 1]) == 1 and len([c for c in t.second if c[1] == 1]) == 1
    for r, s in enumerate(["a", "b"]):
        _, a_last = _expected(LAST_B[s], SIZES_B)
        assert t.rows[r][3] == f"{a_last.mean():.2f} ± {a_last.std(ddof=1):.2f}"
    assert t.rows[2][3:] == ["—", "—", "—"]  # c did not run on toy_b
    assert "mean ± std over seeds" in t.caption  # what ± is, where the numbers are
    # CSV: long form with every spread
    d = t.data.set_index(["strategy", "benchmark", "metric"])
    acc, _ = _expected(LAST["c"])
    row = d.loc[("c", "toy_a", "acc")]
    lo, hi = stats.t.interval(0.95, 2, loc=acc.mean(), scale=stats.sem(acc))
    assert row["mean"] == pytest.approx(acc.mean()) and row["std"] == pytest.approx(acc.std(ddof=1))
    assert row["ci95"] == pytest.approx((hi - lo) / 2) and row["min"] == pytest.approx(acc.min()) and row["seeds"] == 3


def _files(runs, **kw) -> dict[str, str]:
    """The report's table files and pages, without rendering figures."""
    from clbench.reports.document import render_markdown
    from clbench.reports.html import render_html

    title, out, _ = build_report(runs, ReportOptions(formats=("html", "md"), **kw), render=False)
    files = {k: v.decode() for k, v in out.files.items()}
    files["report.md"] = render_markdown(title, out.blocks)
    files["report.html"] = render_html(title, out.blocks)
    return files


def test_main_table_latex_markdown_csv_files(tmp_path):
    import io

    files = _files(_runs(tmp_path))
    tex = files["tables/main.tex"]
    for token in (r"\toprule", r"\midrule", r"\bottomrule", r"\multicolumn{2}{c}{toy\_a}", r"\multicolumn{3}{c}{toy\_b}",
                  r"\cmidrule(lr){2-3}", r"\cmidrule(lr){4-6}", r"\begin{tabular}{lrrrrr}", r"$\pm$"):
        assert token in tex, token
    body = tex.split(r"\midrule")[1]
    assert body.count(r"\textbf{") == 5 and body.count(r"\underline{") == 5  # one best and one second per column
    md = files["tables/main.md"]
    assert "| Strategy | toy_a · ACC | toy_a · AIA | toy_b · A_last | toy_b · AIA | toy_b · ACC |" in md
    assert md.count("**") == 10 and md.count("<u>") == 5
    csv = pd.read_csv(io.StringIO(files["tables/main.csv"]))
    assert set(csv.metric) == {"acc", "aia", "a_last"} and len(csv) == 3 * 2 + 2 * 3
    assert csv.best.sum() == 5 and csv.second.sum() == 5


def test_main_metrics_option_and_ties_as_printed(tmp_path):
    recs = []
    for seed in range(2):
        recs.append(record("t", "x", seed, lower_triangular([0.5, 0.5, 0.5])))
        recs.append(record("t", "y", seed, lower_triangular([0.5, 0.5, 0.5 + 1e-7])))  # prints the same as x
        recs.append(record("t", "z", seed, lower_triangular([0.4, 0.4, 0.4])))
    comp = build_comparison([load_run(write_run(tmp_path / "ties", recs))], ReportOptions(main_metrics=("a_last",)))
    t = main_table(comp, "ci")
    assert t.columns == ["Strategy", "A_last"] and "95% CI" in t.caption
    assert t.best == {(0, 1), (1, 1)} and t.second == {(2, 1)}


def test_undefined_paired_t_is_a_dash_with_a_footnote_and_left_out_of_holm(tmp_path):
    base = [[0.8, 0.7, 0.9], [0.75, 0.72, 0.88], [0.9, 0.6, 0.85], [0.7, 0.8, 0.9]]
    recs = []
    for seed, row in enumerate(base):
        recs.append(record("t", "x", seed, lower_triangular(row)))
        recs.append(record("t", "y", seed, lower_triangular([v - 0.125 for v in row])))  # every difference is 12.5 pp
        recs.append(record("t", "z", seed, lower_triangular([v - 0.02 * (seed % 2) - 0.01 * seed for v in row])))
    comp = build_comparison([load_run(write_run(tmp_path / "eq", recs))], ReportOptions())
    bench = comp.benchmarks[0]
    pw = pairwise_table(comp, bench)
    rows = {(r[0], r[1]): r for r in pw.rows}
    xy = rows[("x", "y")]
    assert xy[4] == "—¹" and xy[5] == "—" and any(n.startswith("—¹") and "Holm" in n for n in pw.notes)
    d = pw.data.set_index(["a", "b"])
    assert math.isnan(d.loc[("x", "y"), "p_t"]) and math.isnan(d.loc[("x", "y"), "p_t_holm"])
    # Holm over the two defined tests only (m = 2), recomputed from scipy's paired t-tests
    acc = {s: np.array([np.mean(r["accuracy"][-1]) for r in recs if r["strategy"] == s]) for s in "xyz"}
    p = {k: stats.ttest_rel(acc[k[0]], acc[k[1]]).pvalue for k in (("x", "z"), ("y", "z"))}
    srt = sorted(p, key=p.get)
    holm = {srt[0]: min(1, 2 * p[srt[0]])}
    holm[srt[1]] = max(holm[srt[0]], min(1, p[srt[1]]))
    for k in p:
        assert d.loc[k, "p_t"] == pytest.approx(p[k]) and d.loc[k, "p_t_holm"] == pytest.approx(holm[k])
    # the summary's p vs best shows the same dash and footnote
    st = summary_table(comp, bench, "std")
    row_y = next(r for r in st.rows if r[0] == "y")
    assert row_y[-2] == "—¹" and any(n.startswith("—¹") for n in st.notes)


def test_cells_that_saw_future_experiences_are_marked(tmp_path):
    future = {"unlabelled": "all_experiences_unlabelled", "sees_future": True, "samples": 900}
    recs = []
    for seed in range(3):
        recs.append(record("t", "kvb", seed, lower_triangular([0.9, 0.9, 0.95 - 0.01 * seed]), stream_extra=future))
        recs.append(record("t", "nmc", seed, lower_triangular([0.8, 0.85, 0.9 - 0.02 * seed])))
    runs = [load_run(write_run(tmp_path / "kvb", recs))]
    comp = build_comparison(runs, ReportOptions())
    t = main_table(comp, "std")
    assert t.rows[0][1].endswith("†") and not t.rows[1][1].endswith("†")
    assert any("all_experiences_unlabelled" in n for n in t.notes)
    bench = comp.benchmarks[0]
    st = summary_table(comp, bench, "std")
    assert [r[0] for r in st.rows] == ["kvb†", "nmc"]
    pw = pairwise_table(comp, bench)  # the unlabelled-data request does not change the stream: still paired
    assert pw.rows[0][2] == "3"
    title, out, _ = build_report(runs, ReportOptions(formats=("html",)), keep_figures=True, render=False)
    legend = [t.get_text() for t in out.figures["seen_accuracy_t"].legends[0].get_texts()]
    assert legend[0].startswith("kvb†") and legend[1].startswith("nmc")
    cost_legend = [t.get_text() for t in out.figures["cost_t"].legends[0].get_texts()]
    assert cost_legend == ["kvb†", "nmc"]


def test_markdown_escapes_html_in_labels_like_html(tmp_path):
    label = "<b>bold</b>&co"
    recs = [record("t", label, seed, lower_triangular([0.8, 0.7, 0.9 + 0.01 * seed]), strat_entry={"name": "finetune"})
            for seed in range(2)]
    recs += [record("t", "nmc", seed, lower_triangular([0.6, 0.7, 0.9 + 0.01 * seed])) for seed in range(2)]
    files = _files([load_run(write_run(tmp_path / "esc", recs))])
    md, html = files["report.md"], files["report.html"]
    assert "<b>bold</b>" not in md and "<b>bold</b>" not in html
    assert "&lt;b&gt;bold&lt;/b&gt;&amp;co" in md and "&lt;b&gt;bold&lt;/b&gt;&amp;co" in html
    assert "&lt;b&gt;bold&lt;/b&gt;&amp;co" in files["tables/main.md"]
    assert r"\textless{}b\textgreater{}bold" in files["tables/main.tex"]


def test_every_number_with_plus_minus_says_what_it_is(tmp_path):
    runs = _runs(tmp_path)
    for spread, words in (("std", "std over seeds"), ("ci", "95% CI over seeds")):
        _, out, _ = build_report(runs, ReportOptions(spread=spread, formats=("html",)), render=False)
        from clbench.reports.document import FigureRef, Table

        tables = [b for b in out.blocks if isinstance(b, Table) and any("±" in v for row in b.rows for v in row)]
        assert len(tables) >= 3
        for t in tables:
            assert words in t.caption or (t.name.startswith("pairwise") and "95% CI" in t.caption), t.name
        for f in (b for b in out.blocks if isinstance(b, FigureRef)):
            if re.search(r"whiskers|band", f.caption):
                assert re.search(r"(whiskers|band) = (std|95% CI|min–max)", f.caption), f.caption


def test_frozen_feature_cells_pair_with_raw_input_cells_of_the_same_stream(tmp_path):
    """A strategy on frozen features sees the same samples in the same order: its seeds pair with a raw-input one."""
    recs = []
    for seed in range(3):
        recs.append(record("t", "finetune", seed, lower_triangular([0.2, 0.3, 0.9 - 0.01 * seed])))
        recs.append(record("t", "nmc", seed, lower_triangular([0.8, 0.85, 0.9 - 0.03 * seed]),
                           stream_params={"backbone": "flatten", "feature_cache_hit": seed % 2 == 0}))
    comp = build_comparison([load_run(write_run(tmp_path / "mix", recs))], ReportOptions())
    pw = pairwise_table(comp, comp.benchmarks[0])
    assert pw is not None and pw.rows[0][2] == "3"
    a = [np.mean(r["accuracy"][-1]) for r in recs if r["strategy"] == "finetune"]
    b = [np.mean(r["accuracy"][-1]) for r in recs if r["strategy"] == "nmc"]
    assert pw.data.p_t[0] == pytest.approx(stats.ttest_rel(a, b).pvalue)


def test_an_experience_without_test_data_is_left_out_not_zero(tmp_path):
    """A blurry stream's experience with no new class has no test data: NaN in R, blank in the matrix, no 'nan'."""
    from clbench.reports.report import mean_matrix

    recs = []
    for seed in range(2):
        R = lower_triangular([0.8, 0.6 + 0.1 * seed, 0.9])
        R[:, 1] = np.nan  # experience 1 brought no new class
        recs.append(record("t", "a", seed, R, test_sizes=[100, 0, 50], stream_params=BLURRY))
    comp = build_comparison([load_run(write_run(tmp_path / "nan", recs))], ReportOptions())
    t = main_table(comp, "std")
    acc = np.array([np.mean([0.8, 0.9])] * 2) * 100  # the mean over the experiences that have test data
    assert t.rows[0][t.columns.index("ACC")] == f"{acc.mean():.2f} ± {acc.std(ddof=1):.2f}"
    _, out, _ = build_report(comp.runs, ReportOptions(formats=("html",)), keep_figures=True, render=False)
    texts = [x.get_text() for ax in out.figures["accuracy_matrix_t"].axes for x in ax.texts]
    assert "–" in texts and not any("nan" in x for x in texts)
    m = mean_matrix([[[0.5, np.nan], [0.4, np.nan]], [[0.7, np.nan], [np.nan, np.nan]]])
    assert m[0, 0] == pytest.approx(0.6) and m[1, 0] == pytest.approx(0.4) and np.isnan(m[0, 1])
