"""bench/power_law_study.py on synthetic run folders: per-phase means/CIs and paired p-values against scipy
computed here, missing and failed cells, the verdicts on constructed cases, the published files."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import stats

from clbench.results import CellRecord, cell_id
from clbench.stats import Aggregate

REPO = Path(__file__).resolve().parents[2]


def load_script():
    spec = importlib.util.spec_from_file_location("clbench_bench_power_law_study", REPO / "bench" / "power_law_study.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


pls = load_script()

T = 3
SEEDS = [0, 1, 2]
SIZES = [100, 200, 300]  # unequal: the seen accuracy must be sample-weighted
BASE = np.array([[0.90, 0.10, 0.10],
                 [0.70, 0.90, 0.10],
                 [0.60, 0.70, 0.90]])
# per arm: offset of every learned entry (j <= i) and per-seed noise; chosen so that power_law's CIs lie
# clearly above EWC's and SI's, clearly below uniform's, and overlap exponential's
ARM_SHIFT = {"power_law": (0.0, [0.00, 0.01, -0.01]), "exponential": (0.0, [0.05, -0.06, 0.02]),
             "uniform": (0.06, [0.00, 0.01, -0.005]), "none": (-0.3, [0.02, -0.02, 0.0]),
             "all": (0.08, [0.0, 0.01, 0.0]),  # seeds 0, 1 (its only ok ones): the same difference to power_law
             "ewc": (-0.25, [0.01, -0.01, 0.0]), "si": (-0.2, [0.0, 0.01, 0.01])}


def matrix(arm: str, seed: int) -> np.ndarray:
    shift, noise = ARM_SHIFT[arm]
    R = BASE.copy()
    low = np.tril(np.ones((T, T), bool))
    R[low] += shift + noise[seed]
    R[np.arange(T), np.arange(T)] += 0.001 * seed * (np.arange(T) + 1)  # the phases differ across seeds, too
    return np.clip(R, 0, 1)


def record(bench: dict, strat: dict, seed: int, R: np.ndarray | None) -> CellRecord:
    cid = cell_id(bench, strat, seed)
    b, s = bench.get("label", bench["name"]), strat.get("label", strat["name"])
    if R is None:
        return CellRecord(cid, b, s, seed, status="failed", error="RuntimeError: boom")
    return CellRecord(cid, b, s, seed, accuracy=R.tolist(), test_sizes=list(SIZES), train_seconds=[1.0] * T,
                      eval_seconds=[0.1] * T, peak_memory_mb=[1.0] * T, state_bytes=[1] * T,
                      baseline_accuracy=[0.1] * T, metrics={"acc": float(R[-1].mean()), "fwt": 0.0},
                      stream={"seed": seed, "name": "permuted_mnist_subset"})


def write_folder(path: Path, benches: list[dict], strats: list[dict], cells: list, with_config: bool = True) -> None:
    (path / "cells").mkdir(parents=True)
    if with_config:
        (path / "config.yaml").write_text(yaml.safe_dump({"name": path.name, "seeds": SEEDS, "benchmarks": benches,
                                                          "strategies": strats}))
    for b, s, seed, R in cells:
        rec = record(b, s, seed, R)
        (path / "cells" / f"{rec.cell_id}.json").write_text(json.dumps(rec.to_dict()))


BENCH = {"name": "permuted_mnist_subset"}
MLP = {"name": "finetune", "label": "mlp"}
EWC = {"name": "ewc", "ewc_lambda": 100.0}
SI = {"name": "si", "si_lambda": 1.0}


def tune_json() -> dict:
    def trials(key, values):
        return [{"number": i, "state": "COMPLETE", "value": 0.5 + 0.01 * i, "params": {key: v}, "seconds": 3.0}
                for i, v in enumerate(values)]

    return {"objective": "aia", "sampler": "grid", "protocol": "two-phase", "tuning_seeds": [0],
            "tuning_benchmark": {"name": "permuted_fmnist"}, "evaluation_benchmark": {"name": "none"},
            "strategies": [
                {"strategy": "ewc", "chosen": {"ewc_lambda": 100.0}, "phase1_score": 0.52,
                 "tuning": {"data": "permuted_fmnist", "trials": trials("ewc_lambda", [10.0, 100.0, 1000.0])}},
                {"strategy": "si", "chosen": {"si_lambda": 1.0}, "phase1_score": 0.51,
                 "tuning": {"data": "permuted_fmnist", "trials": trials("si_lambda", [0.1, 1.0])}}]}


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    """All cells ok except: exponential seed 1 failed, all seed 2 missing; the tuned folder has no config."""
    benches = [{**BENCH, "label": a} for a in pls.REHEARSAL_ARMS]
    cells = []
    for b in benches:
        for seed in SEEDS:
            if b["label"] == "all" and seed == 2:
                continue
            cells.append((b, MLP, seed, None if (b["label"] == "exponential" and seed == 1) else matrix(b["label"], seed)))
    write_folder(tmp_path / "power_law_pmnist", benches, [MLP], cells)
    none = {**BENCH, "label": "none"}
    write_folder(tmp_path / "power_law_tune", [none], [EWC, SI],
                 [(none, s, seed, matrix(s["name"], seed)) for s in (EWC, SI) for seed in SEEDS], with_config=False)
    (tmp_path / "power_law_tune" / "tune.json").write_text(json.dumps(tune_json()))
    return tmp_path


def seen_by_hand(R: np.ndarray) -> np.ndarray:
    n = np.array(SIZES, float)
    return np.array([sum(n[j] * R[i, j] for j in range(i + 1)) / n[: i + 1].sum() for i in range(T)])


def ci_by_hand(x) -> tuple[float, float]:
    x = np.asarray(x, float)
    return x.mean(), stats.t.ppf(0.975, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size)


def arm_seeds(arm: str) -> list[int]:
    return {"exponential": [0, 2], "all": [0, 1]}.get(arm, SEEDS)


def key(arm: str) -> str:
    return {"EWC": "ewc", "SI": "si"}.get(arm, arm)


def test_missing_and_failed_cells_are_named_and_left_out(runs: Path):
    data = pls.load_study(runs / "power_law_pmnist", runs / "power_law_tune")
    assert data.seeds == SEEDS
    assert data.missing == [("all", 2)]
    assert [(r.benchmark, r.seed) for r in data.failed()] == [("exponential", 1)]
    text = pls.build_report(data).text
    assert "all/seed 2" in text and "FAILED: exponential/mlp/seed 1: RuntimeError: boom" in text
    pp = pls.per_phase_frame(data)
    assert set(pp.loc[pp["arm"] == "exponential", "n"]) == {2}  # the failed seed is not averaged (as 0 or otherwise)


def test_per_phase_means_and_cis_against_scipy(runs: Path):
    data = pls.load_study(runs / "power_law_pmnist", runs / "power_law_tune")
    pp = pls.per_phase_frame(data)
    for arm in pls.ARMS:
        curves = np.array([seen_by_hand(matrix(key(arm), s)) for s in arm_seeds(arm)])
        for p in range(T):
            row = pp[(pp["arm"] == arm) & (pp["phase"] == p + 1)].iloc[0]
            m, h = ci_by_hand(curves[:, p])
            assert row["n"] == len(arm_seeds(arm))
            assert row["mean"] == pytest.approx(m, abs=1e-12)
            assert row["ci"] == pytest.approx(h, abs=1e-12)
            assert row["low"] == pytest.approx(m - h, abs=1e-12) and row["high"] == pytest.approx(m + h, abs=1e-12)


def test_paired_pvalues_and_holm_against_scipy(runs: Path):
    data = pls.load_study(runs / "power_law_pmnist", runs / "power_law_tune")
    tests = pls.paired_frame(data)
    for metric in ("final", "average"):
        def value(arm, seed):
            a = seen_by_hand(matrix(key(arm), seed))
            return a[-1] if metric == "final" else a.mean()

        block = tests[tests["metric"] == metric]
        assert list(block["b"]) == [a for a in pls.ARMS if a != "power_law"]
        expected = []
        for arm in block["b"]:
            shared = [s for s in SEEDS if s in arm_seeds(arm)]
            x = [value("power_law", s) for s in shared]
            y = [value(arm, s) for s in shared]
            row = block[block["b"] == arm].iloc[0]
            assert row["n"] == len(shared)
            assert row["diff"] == pytest.approx(np.mean(np.subtract(x, y)), abs=1e-12)
            if np.ptp(np.subtract(x, y)) < 1e-12:  # "all": equal differences on its 2 seeds -> undefined, not 0
                assert arm == "all" and math.isnan(row["p_t"]) and math.isnan(row["p_holm"])
                expected.append(float("nan"))
                continue
            assert row["p_t"] == pytest.approx(stats.ttest_rel(x, y).pvalue, rel=1e-9)
            expected.append(stats.ttest_rel(x, y).pvalue)
        # Holm by hand over the family of this metric (the undefined p left out)
        have = [i for i, p in enumerate(expected) if not math.isnan(p)]
        order = sorted(have, key=lambda i: expected[i])
        m, running, holm = len(have), 0.0, np.full(len(expected), np.nan)
        for rank, i in enumerate(order):
            running = max(running, min(1.0, (m - rank) * expected[i]))
            holm[i] = running
        assert m == 5
        np.testing.assert_allclose(block["p_holm"].to_numpy(), holm, rtol=1e-9)


def agg(mean: float, ci: float, n: int = 3) -> Aggregate:
    return Aggregate(mean, float("nan"), ci, n, float("nan"), float("nan"))


def test_verdict_on_constructed_cases():
    assert pls.verdict(agg(0.80, 0.02), agg(0.70, 0.05)) == pls.HOLDS          # clear win
    assert pls.verdict(agg(0.60, 0.02), agg(0.70, 0.05)) == pls.NOT_HOLD       # clear loss
    assert pls.verdict(agg(0.72, 0.02), agg(0.70, 0.05)) == pls.INCONCLUSIVE   # overlapping CIs
    assert pls.verdict(agg(0.80, 0.02), agg(0.70, float("nan"), 1)) == pls.INCONCLUSIVE  # one seed: no CI
    assert pls.verdict(agg(0.80, 0.02), agg(float("nan"), float("nan"), 0)) == pls.NOT_MEASURED
    assert pls.combine([pls.HOLDS, pls.HOLDS]) == pls.HOLDS
    assert pls.combine([pls.HOLDS, pls.NOT_HOLD, pls.INCONCLUSIVE]) == pls.NOT_HOLD
    assert pls.combine([pls.HOLDS, pls.INCONCLUSIVE]) == pls.INCONCLUSIVE
    assert pls.paired_reading(-0.01, 0.01) == "worse" and pls.paired_reading(0.01, 0.2) == "n.s."


def test_claim_verdicts_from_the_data(runs: Path):
    """power_law clearly above EWC and SI (C1 holds); clearly below uniform (C2 does not hold) while its CIs
    overlap exponential's (that part inconclusive)."""
    data = pls.load_study(runs / "power_law_pmnist", runs / "power_law_tune")
    aggs = pls.summary_aggregates(data)
    vt, overall = pls.claim_verdicts(aggs, tests=pls.paired_frame(data))
    assert overall == {"C1": pls.HOLDS, "C2": pls.NOT_HOLD}
    part = {(r.vs, r.metric): r.verdict for r in vt.itertuples()}
    assert part[("exponential", "final")] == part[("exponential", "average")] == pls.INCONCLUSIVE
    assert part[("uniform", "final")] == part[("uniform", "average")] == pls.NOT_HOLD
    # without the tuned folder, C1 is not measured and the rest still computes
    partial = pls.load_study(runs / "power_law_pmnist", runs / "nowhere")
    _, overall = pls.claim_verdicts(pls.summary_aggregates(partial))
    assert overall == {"C1": pls.NOT_MEASURED, "C2": pls.NOT_HOLD}
    assert ("EWC", 0) in partial.missing and any("does not exist yet" in n for n in partial.notes)


def test_main_prints_tables_and_publishes(runs: Path, tmp_path: Path, capsys):
    out = tmp_path / "results" / "power_law"
    assert pls.main(["--runs", str(runs), "--publish", str(out)]) == 0
    text = capsys.readouterr().out
    assert "| phase | power_law |" in text and "ewc_lambda=100" in text and "**C1**" in text
    study = yaml.safe_load((out / "study.yaml").read_text())
    assert set(study["configs"]) == {"configs/power_law_pmnist.yaml", "configs/power_law_tune.yaml"}
    assert {"output.md", "per_phase.csv", "tests.csv", "per_phase.png"} <= set(study["files"])
    assert (out / "per_phase.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert any("power_law_study.py" in c for c in study["command"])
