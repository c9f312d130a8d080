"""Report statistics on hand-made results (checked against scipy.stats computed here) and the tune section."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from clbench.reports.data import build_comparison, load_run
from clbench.reports.options import ReportOptions
from clbench.reports.report import write_report
from clbench.reports.tables import summary_table
from clbench.reports.tune import tune_entries
from clbench.stats import friedman_nemenyi, holm, mean_ci, paired_test, pareto_front
from report_records import record, write_run


def test_mean_ci_is_student_t_as_scipy():
    x = np.array([0.71, 0.75, 0.69, 0.80, 0.77])
    ci = mean_ci(x)
    lo, hi = stats.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=stats.sem(x))
    assert ci.mean == pytest.approx(x.mean()) and ci.n == 5
    assert (ci.low, ci.high) == (pytest.approx(lo), pytest.approx(hi))
    assert mean_ci(x, 0.99).half_width > ci.half_width
    assert mean_ci([0.5, float("nan"), 0.7]).n == 2  # NaN (a failed cell) is dropped, not counted as 0
    one = mean_ci([0.4])
    assert one.mean == 0.4 and math.isnan(one.half_width)
    assert mean_ci([]).n == 0 and math.isnan(mean_ci([]).mean)


def _hand_made_run(root: Path) -> tuple[Path, dict[str, list[float]]]:
    """Strategy a (3 seeds), b (3 ok seeds + 1 failed); R lower-triangular with known last rows."""
    last = {"a": [[0.9, 0.8, 0.95], [0.85, 0.82, 0.97], [0.88, 0.78, 0.99]],
            "b": [[0.5, 0.6, 0.96], [0.4, 0.65, 0.98], [0.55, 0.5, 0.97]]}
    accs: dict[str, list[float]] = {}
    recs = []
    for s, rows in last.items():
        for seed, row in enumerate(rows):
            R = np.array([[0.97, 0, 0], [0.93, 0.96, 0], row])
            recs.append(record("toy", s, seed, R, train_seconds=1.0 + seed, state_bytes=2**20 * (1 + seed)))
            accs.setdefault(s, []).append(recs[-1]["metrics"]["acc"])
    recs.append(record("toy", "b", 3, None, error="CellFailure: non-finite training loss"))
    return write_run(root / "hand", recs), accs


def test_summary_table_mean_spread_best_and_paired_p_on_hand_made_results(tmp_path):
    run, accs = _hand_made_run(tmp_path)
    comp = build_comparison([load_run(run)], ReportOptions())
    table = summary_table(comp, comp.benchmarks[0], "ci")
    df = table.data.set_index("strategy")
    for s in ("a", "b"):
        v = 100 * np.array(accs[s])
        lo, hi = stats.t.interval(0.95, len(v) - 1, loc=v.mean(), scale=stats.sem(v))
        assert df.loc[s, "acc_mean"] == pytest.approx(v.mean())
        assert df.loc[s, "acc_ci95"] == pytest.approx((hi - lo) / 2)
        assert df.loc[s, "acc_std"] == pytest.approx(v.std(ddof=1))
        assert df.loc[s, "seeds_ok"] == 3
    assert df.loc["b", "failed"] == 1 and df.loc["a", "failed"] == 0
    assert df.loc["a", "acc_best"] and not df.loc["b", "acc_best"]
    assert df.loc["a", "forgetting_best"] and df.loc["a", "train_seconds_best"] and df.loc["b", "train_seconds_best"]
    assert df.loc["b", "p_vs_best_t"] == pytest.approx(stats.ttest_rel(accs["b"], accs["a"]).pvalue)
    assert df.loc["b", "p_vs_best_wilcoxon"] == pytest.approx(stats.wilcoxon(np.subtract(accs["b"], accs["a"])).pvalue)
    row_a = table.rows[0]
    v = 100 * np.array(accs["a"])
    assert row_a[1] == "3/3" and table.rows[1][1] == "3/4"
    assert row_a[2] == f"{v.mean():.2f} ± {stats.t.ppf(0.975, 2) * stats.sem(v):.2f}"
    assert (0, 2) in table.best and (1, 2) in table.second and "95% CI over seeds" in table.caption
    # the state-bytes column is shown in MiB: seeds 0..2 keep 1, 2, 3 MiB, mean 2
    assert df.loc["a", "state_mib_mean"] == pytest.approx(2.0)
    # the process RSS peak is in the CSV but not shown: it measures the process, not the strategy
    assert "peak_memory_mb_mean" in df and not any("RSS" in c for c in table.columns)


def test_paired_test_holm_and_pareto_match_definitions():
    x, y = [0.8, 0.82, 0.79, 0.85, 0.9, 0.7], [0.7, 0.8, 0.75, 0.8, 0.84, 0.71]
    t = paired_test("x", "y", x, y)
    assert t.n == 6 and t.p_t == pytest.approx(stats.ttest_rel(x, y).pvalue)
    assert t.p_wilcoxon == pytest.approx(stats.wilcoxon(np.subtract(x, y)).pvalue)
    assert t.diff.mean == pytest.approx(np.mean(np.subtract(x, y)))
    one = paired_test("x", "y", [0.5], [0.4])
    assert math.isnan(one.p_t) and math.isnan(one.p_wilcoxon)  # one pair: no test
    assert holm([0.01, 0.04, 0.03, float("nan")])[:3] == pytest.approx([0.03, 0.06, 0.06])
    assert pareto_front([1, 2, 3, 2.5], [0.5, 0.7, 0.9, 0.6]) == [0, 1, 2]


def test_friedman_nemenyi_matches_scipy_and_demsar_table():
    scores = {"a": [0.9, 0.8, 0.85, 0.7], "b": [0.8, 0.75, 0.86, 0.6], "c": [0.5, 0.6, 0.55, 0.65]}
    r = friedman_nemenyi(scores)
    res = stats.friedmanchisquare(*scores.values())
    assert r.chi2 == pytest.approx(res.statistic) and r.p_friedman == pytest.approx(res.pvalue)
    assert r.avg_rank == pytest.approx({"a": 1.25, "b": 2.0, "c": 2.75})
    assert r.cd == pytest.approx(2.343 * math.sqrt(3 * 4 / (6 * 4)), abs=1e-3)  # Demšar 2006, q_0.05 for k = 3


def _tune_json(names_scores: dict[str, tuple[float, float, float]]) -> dict:
    rows = []
    for s, (p1, p2, conv) in names_scores.items():
        rows.append({"strategy": s, "phase1_score": p1, "phase2_score": p2, "conventional_score": conv,
                     "phase2": {"per_seed": {"0": p2 - 0.01, "1": p2 + 0.01}, "failed": []}, "chosen": {"lr": 0.1}})
    two = sorted(names_scores, key=lambda k: -names_scores[k][1])
    conv = sorted(names_scores, key=lambda k: -names_scores[k][2])
    return {"objective": "acc", "strategies": rows, "rankings": {"two_phase": two, "conventional": conv},
            "kendall_tau": {"two_phase_vs_conventional": {"tau": -1 / 3, "p_value": 1.0, "n": 3}}}


def test_tune_run_gets_scores_and_rankings_side_by_side(tmp_path):
    from PIL import Image

    run = tmp_path / "tune_run"
    run.mkdir()
    (run / "tune.json").write_text(json.dumps(_tune_json({"ewc": (0.7, 0.6, 0.8), "replay": (0.75, 0.7, 0.72),
                                                          "lwf": (0.5, 0.45, 0.5)})))
    entries = {e.name: e for e in tune_entries(load_run(run))}
    assert entries["replay"].rank_two_phase == 1 and entries["replay"].rank_conventional == 2
    assert entries["ewc"].rank_two_phase == 2 and entries["ewc"].rank_conventional == 1
    (tmp_path / "rep" / "figures").mkdir(parents=True)
    (tmp_path / "rep" / "figures" / "pareto_gone.png").write_bytes(b"stale")  # a figure an earlier report had
    (tmp_path / "rep" / "figures" / "notes.txt").write_text("mine")
    out = write_report(run, tmp_path / "rep", "html,png")
    assert not (out / "figures" / "pareto_gone.png").exists() and (out / "figures" / "notes.txt").exists()
    for name in ("tune_scores", "tune_rankings"):
        with Image.open(out / "figures" / f"{name}.png") as im:
            assert im.width >= 400 and im.height >= 200
    table = pd.read_csv(out / "tables" / "tune.csv").set_index("strategy")
    assert table.loc["ewc", "conventional_minus_two_phase"] == pytest.approx(0.2)
    html = (out / "report.html").read_text()
    assert html.count('<img ') == 2 and "2 of 3 strategies change rank" in html


def test_tune_run_without_readable_scores_is_not_an_error(tmp_path):
    run, _ = _hand_made_run(tmp_path)
    (run / "tune.json").write_text(json.dumps({"strategies": "not a list"}))
    assert tune_entries(load_run(run)) is None


def test_tune_scores_are_fractions_never_rescaled_by_guess(tmp_path):
    """tune.json holds fractions; the report multiplies by 100 and nothing else (no 'above 1.5 means percent')."""
    run = tmp_path / "tune_units"
    run.mkdir()
    data = _tune_json({"ewc": (0.012, 0.01, 0.02), "replay": (2.0, 0.03, 0.04)})  # 2.0: not a fraction, shown as is
    data["strategies"][1]["phase2"]["per_seed"] = {"0": 0.02, "1": 0.03, "2": 0.04}
    (run / "tune.json").write_text(json.dumps(data))
    from clbench.reports.report import build_report

    _, out, _ = build_report([load_run(run)], ReportOptions(formats=("html",)), render=False)
    table = next(b for b in out.blocks if getattr(b, "name", "") == "tune")
    rows = {r[0]: r for r in table.rows}
    assert rows["ewc"][1] == "1.20" and rows["ewc"][4] == "2.00"
    assert rows["replay"][1] == "200.00"
    per_seed = np.array([0.02, 0.03, 0.04])
    assert rows["replay"][2] == f"{100 * per_seed.mean():.2f} ± {100 * per_seed.std(ddof=1):.2f}"
    assert "mean ± std over seeds" in table.caption
