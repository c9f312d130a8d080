"""What a report compares and how it names it: selection, order, renaming, pooling identical configurations from
several run folders (seeds together, a repeated seed counted once), from the command line and a report config."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from clbench.errors import UserError
from clbench.protocols.cli import main
from clbench.reports.data import build_comparison, load_run
from clbench.reports.options import ReportOptions, load_report_config
from clbench.reports.tables import main_table
from report_records import lower_triangular, record, write_run

FT = {"name": "finetune", "lr": 0.1}


def _acc(seed: int, base: float) -> np.ndarray:
    return lower_triangular([base, base + 0.05 * seed, 0.9 - 0.01 * seed])


@pytest.fixture
def two_runs(tmp_path):
    """A: finetune(lr 0.1), replay(buffer 10) on toy, seeds 0 1. B: the same finetune, seeds 2 3; replay with another
    buffer (same label, other configuration); ewc; and a benchmark A does not have."""
    a = [record("toy", "finetune", s, _acc(s, 0.2), strat_entry=FT) for s in (0, 1)]
    a += [record("toy", "replay", s, _acc(s, 0.6), strat_entry={"name": "replay", "buffer_size": 10}) for s in (0, 1)]
    b = [record("toy", "finetune", s, _acc(s, 0.25), strat_entry=FT) for s in (2, 3)]
    b += [record("toy", "replay", s, _acc(s, 0.7), strat_entry={"name": "replay", "buffer_size": 50}) for s in (2, 3)]
    b += [record("toy", "ewc", s, _acc(s, 0.4)) for s in (2, 3)]
    b += [record("other", "ewc", s, _acc(s, 0.45)) for s in (2, 3)]
    return write_run(tmp_path / "A", a), write_run(tmp_path / "B", b), a + b


def test_identical_configurations_pool_their_seeds_and_labels_stay_short(two_runs):
    ra, rb, recs = two_runs
    comp = build_comparison([load_run(ra), load_run(rb)], ReportOptions())
    assert [comp.label(k) for k in comp.strategies] == ["finetune", "replay [A]", "replay [B]", "ewc"]
    assert [b.label for b in comp.benchmarks] == ["toy", "other"]
    ft = next(s for s in comp.bench_series(comp.benchmarks[0].key) if comp.label(s) == "finetune")
    assert sorted(c.seed for c in ft.ok_cells) == [0, 1, 2, 3] and ft.runs == ["A", "B"]
    acc = np.array([np.mean(r["accuracy"][-1]) for r in recs if r["strategy"] == "finetune"])
    t = main_table(comp, "std")
    assert t.rows[0][1] == f"{100 * acc.mean():.2f} ± {100 * acc.std(ddof=1):.2f}"


def test_a_seed_recorded_twice_is_one_sample_and_separate_runs_keep_folders_apart(two_runs, tmp_path):
    ra, _, recs = two_runs
    copy = tmp_path / "A_copy"
    shutil.copytree(ra, copy)
    merged = build_comparison([load_run(ra), load_run(copy)], ReportOptions())
    assert [comp for comp in (merged.label(k) for k in merged.strategies)] == ["finetune", "replay"]
    assert len(merged.duplicates) == 4 and all(kept == "A" and dup == "A_copy" for _, kept, dup in merged.duplicates)
    ft = merged.bench_series(merged.benchmarks[0].key)[0]
    assert sorted(c.seed for c in ft.cells) == [0, 1]
    apart = build_comparison([load_run(ra), load_run(copy)], ReportOptions(merge=False))
    assert [apart.label(k) for k in apart.strategies] == ["finetune [A]", "replay [A]", "finetune [A_copy]", "replay [A_copy]"]
    assert [b.label for b in apart.benchmarks] == ["toy [A]", "toy [A_copy]"]


def test_select_order_and_rename(two_runs):
    ra, rb, _ = two_runs
    runs = [load_run(ra), load_run(rb)]
    comp = build_comparison(runs, ReportOptions(strategies=("ewc", "replay [B]", "finetune"), benchmarks=("toy",),
                                                rename={"finetune": "Fine-tune", "replay [B]": "ER-50", "toy": "Toy 3"}))
    assert [comp.label(k) for k in comp.strategies] == ["ewc", "ER-50", "Fine-tune"]
    assert [b.label for b in comp.benchmarks] == ["Toy 3"] and comp.benchmarks[0].title == "Toy 3"
    assert comp.left_out == {"strategies": ["replay [A]"], "benchmarks": ["other"]}
    t = main_table(comp, "std")
    assert [r[0] for r in t.rows] == ["ewc", "ER-50", "Fine-tune"] and t.groups[1] == ("Toy 3", 2)
    # a renamed label selects too; a plain configured label selects every configuration that has it
    comp = build_comparison(runs, ReportOptions(strategies=("Fine-tune", "replay"), rename={"finetune": "Fine-tune"}))
    assert [comp.label(k) for k in comp.strategies] == ["Fine-tune", "replay [A]", "replay [B]"]
    with pytest.raises(UserError, match=r"--strategies 'sgd' matches no strategy.*valid: ewc, finetune, replay \[A\]"):
        build_comparison(runs, ReportOptions(strategies=("sgd",)))
    with pytest.raises(UserError, match="--benchmarks 'mnist' matches no benchmark"):
        build_comparison(runs, ReportOptions(benchmarks=("mnist",)))
    with pytest.raises(UserError, match="--rename nope: no strategy or benchmark"):
        build_comparison(runs, ReportOptions(rename={"nope": "x"}))
    with pytest.raises(UserError, match="would both be called 'same'"):
        build_comparison(runs, ReportOptions(rename={"ewc": "same", "finetune": "same"}))


def test_readable_benchmark_titles_come_from_the_stream(two_runs):
    ra, _, _ = two_runs
    comp = build_comparison([load_run(ra)], ReportOptions())
    assert comp.benchmarks[0].title == "Toy digits, class-IL, 3 experiences"


def _captured(monkeypatch):
    """Run ``clbench report`` argument handling but capture what it would write (no rendering)."""
    import clbench.reports.report as report

    seen = {}

    def fake(run_dirs, out, formats, options):
        seen.update(runs=list(run_dirs), out=out, options=options)
        return report.Path(out or "x")

    monkeypatch.setattr(report, "write_report", fake)
    return seen


def test_command_line_options_override_the_report_config(two_runs, tmp_path, monkeypatch):
    ra, rb, _ = two_runs
    cfg = tmp_path / "paper" / "report.yaml"
    cfg.parent.mkdir()
    cfg.write_text("runs: [../A, ../B]\nstrategies: [finetune, ewc]\nrename: {finetune: FT}\nspread: ci\nband: minmax\n"
                   "out: out\nformats: [html]\nmerge: true\n")
    opts = load_report_config(cfg)
    assert opts.runs == (str(cfg.parent / "../A"), str(cfg.parent / "../B")) and opts.spread == "ci" and opts.band == "minmax"
    assert opts.out == str(cfg.parent / "out") and opts.formats == ("html",) and opts.rename == {"finetune": "FT"}
    seen = _captured(monkeypatch)
    assert main(["report", "--config", str(cfg), "--strategies", "ewc,replay [B]", "--rename", "ewc=EWC", "--spread", "std",
                 "--band", "none", "--format", "md,pdf", "--separate-runs", "--main-metrics", "a_last,acc"]) == 0
    o = seen["options"]
    assert o.strategies == ("ewc", "replay [B]") and o.rename == {"finetune": "FT", "ewc": "EWC"} and o.spread == "std"
    assert o.band == "none" and o.formats == ("md", "pdf") and o.merge is False and o.main_metrics == ("a_last", "acc")
    assert o.runs == opts.runs and o.benchmarks is None
    assert main(["report", str(ra), str(rb)]) == 0
    assert seen["runs"] == [str(ra), str(rb)] and seen["options"] == ReportOptions()


@pytest.mark.slow
def test_report_config_file_and_command_line_write_the_report(two_runs, tmp_path, capsys):
    ra, rb, _ = two_runs
    cfg = tmp_path / "paper" / "report.yaml"
    cfg.parent.mkdir()
    cfg.write_text("runs: [../A, ../B]\nstrategies: [finetune, ewc]\nrename: {finetune: FT}\nspread: ci\n"
                   "out: out\nformats: [html]\n")
    assert main(["report", "--config", str(cfg)]) == 0
    out = cfg.parent / "out"
    assert str(out / "report.html") in capsys.readouterr().out
    main_csv = pd.read_csv(out / "tables" / "main.csv")
    assert list(dict.fromkeys(main_csv.strategy)) == ["FT", "ewc"]
    assert "95% CI" in (out / "tables" / "main.md").read_text() and not (out / "report.md").exists()
    assert main(["report", str(ra), str(rb), "--out", str(tmp_path / "o3"), "--format", "md",
                 "--strategies", "replay [B],finetune", "--rename", "finetune=FT"]) == 0
    assert list(dict.fromkeys(pd.read_csv(tmp_path / "o3" / "tables" / "main.csv").strategy)) == ["replay [B]", "FT"]
    assert (tmp_path / "o3" / "report.md").exists() and not (tmp_path / "o3" / "report.html").exists()


@pytest.mark.parametrize("text, message", [
    ("colour: red\n", "unknown key(s) colour; valid keys: runs, strategies"),
    ("spread: sem\n", "spread must be one of 'std', 'ci', got 'sem'"),
    ("band: wide\n", "band must be one of 'auto', 'std', 'ci', 'minmax', 'none'"),
    ("strategies: finetune\n", "strategies must be"),
    ("rename: [a, b]\n", "rename must be a mapping of old label to new label"),
    ("main_metrics: [acc, top5]\n", "main_metrics must be"),
    ("[1, 2\n", "is not valid YAML"),
])
def test_bad_report_config_is_one_clear_error(tmp_path, capsys, text, message):
    cfg = tmp_path / "r.yaml"
    cfg.write_text(text)
    with pytest.raises(UserError) as exc:
        load_report_config(cfg)
    assert message in str(exc.value)
    assert main(["report", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1


def test_command_line_mistakes_exit_2_with_one_line(two_runs, tmp_path, capsys):
    ra, _, _ = two_runs
    for argv in (["report"], ["report", str(ra), "--rename", "finetune"], ["report", str(ra), "--strategies", ","],
                 ["report", str(ra), "--strategies", "nope"], ["report", "--config", str(tmp_path / "missing.yaml")]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1, err


def test_rename_a_generated_label_that_holds_an_equals_sign():
    """Benchmarks told apart by their parameters get labels such as ``split_fmnist(n_experiences=5,...)``: --rename
    splits OLD=NEW at the last '=' (it split at the first and refused them)."""
    from clbench.reports.options import parse_rename

    old = "split_fmnist(n_experiences=5,backbone=efficientnet_lite0@64)"
    assert parse_rename([f"{old}=FMNIST Lite0", "finetune=Fine-tune"]) == {old: "FMNIST Lite0", "finetune": "Fine-tune"}
    with pytest.raises(UserError, match="OLD=NEW"):
        parse_rename(["finetune="])
