"""`clbench report` on a real small run: figure files, self-contained HTML, failed cells, headless Chromium.

One module-scoped run (split_digits 5 x 2 classes and permuted_digits 3 tasks, 2 seeds, a tiny MLP,
one epoch; a third strategy diverges so its cells fail) made through ``clbench run``, which also
writes the report at the end (the automatic-report path); every test reads that report.
"""

from __future__ import annotations

import base64
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from clbench.errors import UserError
from clbench.protocols.cli import main

pytestmark = pytest.mark.slow  # a real `clbench run` (training) and its automatic report, then report commands on it

BENCH_SLUGS = ("split-digits", "permuted-digits")
FIGURES = [f"{kind}_{b}" for b in BENCH_SLUGS for kind in ("seen_accuracy", "accuracy_matrix", "final_bars", "cost")] \
    + ["critical_difference"]
MLP = {"epochs": 3, "lr": 0.1, "batch_size": 64, "hidden": [32]}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("report_run")
    cfg = {
        "name": "mini", "seeds": [0, 1],
        "benchmarks": [{"name": "split_digits", "n_experiences": 5}, {"name": "permuted_digits", "n_experiences": 3}],
        "strategies": [{"name": "finetune", "label": "finetune", **MLP},
                       {"name": "replay", "buffer_size": 60, **MLP},
                       {"name": "finetune", "label": "diverging", **dict(MLP, lr=1e30)}],
    }
    path = root / "mini.yaml"
    path.write_text(yaml.safe_dump(cfg))
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny MLP: one thread is several times faster on a shared 2-core machine
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("CLBENCH_CACHE", str(root / "cache"))
            mp.setenv("MPLBACKEND", "Agg")
            code = main(["run", str(path), "--output", str(root), "--quiet"])
    finally:
        torch.set_num_threads(threads)
    assert code == 1  # the diverging cells failed; the others finished
    return root / "mini"


@pytest.fixture(scope="module")
def report_dir(run_dir) -> Path:
    return run_dir / "report"


def test_run_writes_report_with_every_figure_as_png_and_pdf(report_dir):
    from PIL import Image

    for name in FIGURES:
        png, pdf = report_dir / "figures" / f"{name}.png", report_dir / "figures" / f"{name}.pdf"
        assert png.exists() and pdf.exists(), name
        with Image.open(png) as im:
            im.verify()
        with Image.open(png) as im:
            assert im.format == "PNG" and im.width >= 400 and im.height >= 150, (name, im.size)
            a = np.asarray(im.convert("L"), dtype=float)
            assert a.std() > 10, f"{name} looks blank"
        assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 5000, name
    assert (report_dir / "report.html").exists() and (report_dir / "report.md").exists()
    for b in BENCH_SLUGS:
        for ext in ("csv", "md", "tex"):
            assert (report_dir / "tables" / f"summary_{b}.{ext}").exists()
    for ext in ("csv", "md", "tex"):
        assert (report_dir / "tables" / f"main.{ext}").exists()
    tex = (report_dir / "tables" / "summary_split-digits.tex").read_text()
    assert r"\textbf{" in tex and r"$\pm$" in tex and r"\begin{tabular}" in tex
    md = (report_dir / "report.md").read_text()
    assert all(f"figures/{n}.png" in md for n in FIGURES)


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def test_html_is_self_contained_and_embeds_every_figure(report_dir):
    text = (report_dir / "report.html").read_text()
    p = _Collect()
    p.feed(text)
    tags = [t for t, _ in p.tags]
    for forbidden in ("link", "script", "iframe", "object", "embed", "source", "video", "audio", "base"):
        assert forbidden not in tags, forbidden
    assert "http://" not in text and "https://" not in text and "url(" not in text and "@import" not in text
    for tag, attrs in p.tags:
        for key in ("src", "href", "srcset", "poster", "data"):
            if attrs.get(key) is None:
                continue
            v = attrs[key]
            assert (key == "src" and v.startswith("data:image/png;base64,")) or (key == "href" and v.startswith("#")), (tag, key, v[:60])
    imgs = {a["data-name"]: a["src"] for t, a in p.tags if t == "img"}
    assert set(imgs) == set(FIGURES)
    for name, src in imgs.items():
        assert base64.b64decode(src.split(",", 1)[1]) == (report_dir / "figures" / f"{name}.png").read_bytes()


def test_failed_cells_reported_as_failed_not_zero(run_dir, report_dir):
    cells = pd.read_csv(run_dir / "cells.csv")
    assert (cells[cells.strategy == "diverging"].status == "failed").all()  # precondition: a real failure
    for b in BENCH_SLUGS:
        summary = pd.read_csv(report_dir / "tables" / f"summary_{b}.csv")
        row = summary[summary.strategy == "diverging"].iloc[0]
        assert row.seeds_ok == 0 and row.failed == 2 and np.isnan(row.acc_mean) and np.isnan(row.forgetting_mean)
        ok = summary[summary.strategy != "diverging"]
        assert (ok.failed == 0).all() and (ok.acc_mean > 0).all()
        md_row = next(line for line in (report_dir / "tables" / f"summary_{b}.md").read_text().splitlines()
                      if line.startswith("| diverging"))
        cols = [c.strip() for c in md_row.strip("|").split("|")]
        assert cols[1] == "0/2" and cols[2] == "failed" and cols[3] == "failed", cols  # ACC and AIA columns say failed
        assert "0.00" not in md_row
    failed = pd.read_csv(report_dir / "tables" / "failed_cells.csv")
    assert len(failed) == 4 and set(failed.strategy) == {"diverging"} and (failed.status == "failed").all()
    assert failed.error.str.contains("non-finite").all()
    ranks = pd.read_csv(report_dir / "tables" / "ranks.csv")
    ranked = ranks[ranks.left_out.isna()] if "left_out" in ranks else ranks
    assert "diverging" not in set(ranked.strategy)  # not ranked as if it scored 0
    left = ranks[ranks.strategy == "diverging"].left_out.iloc[0]
    assert "every cell failed" in left  # and the ranking says why it is left out
    html = (report_dir / "report.html").read_text()
    assert '<tr class="failed"><td class="label">diverging</td><td class="num">0/2</td><td class="num">failed</td>' in html
    assert "FAILED" in html


def test_summary_numbers_come_from_the_cells(run_dir, report_dir):
    """ACC mean and Student-t CI in summary_<bench>.csv against the run's own cells.csv (scipy computes the CI)."""
    from scipy import stats

    cells = pd.read_csv(run_dir / "cells.csv")
    summary = pd.read_csv(report_dir / "tables" / "summary_split-digits.csv")
    for strategy in ("finetune", "replay"):
        v = 100 * cells[(cells.benchmark == "split_digits") & (cells.strategy == strategy)].acc.to_numpy()
        lo, hi = stats.t.interval(0.95, len(v) - 1, loc=v.mean(), scale=stats.sem(v))
        row = summary[summary.strategy == strategy].iloc[0]
        assert row.acc_mean == pytest.approx(v.mean()) and row.acc_ci95 == pytest.approx((hi - lo) / 2)


def test_report_command_compares_two_runs(run_dir, tmp_path, capsys):
    """The same config in two folders: one row per strategy (a repeated seed counted once), or --separate-runs."""
    other = tmp_path / "mini_copy"
    shutil.copytree(run_dir, other, ignore=shutil.ignore_patterns("report"))
    out = tmp_path / "cmp"
    assert main(["report", str(run_dir), str(other), "--out", str(out), "--format", "html"]) == 0
    assert str(out / "report.html") in capsys.readouterr().out
    text = (out / "report.html").read_text()
    assert "[mini" not in text and "repeat a seed already recorded" in text
    assert not (out / "report.md").exists() and not list(out.glob("figures/*.pdf"))
    summary = pd.read_csv(out / "tables" / "summary_split-digits.csv")
    assert list(summary.strategy) == ["finetune", "replay", "diverging"] and set(summary.runs) == {"mini+mini_copy"}
    assert (summary.seeds_ok[:2] == 2).all()
    out2 = tmp_path / "cmp2"
    assert main(["report", str(run_dir), str(other), "--out", str(out2), "--format", "html", "--separate-runs"]) == 0
    summary = pd.read_csv(out2 / "tables" / "summary_split-digits-mini.csv")
    assert list(summary.strategy) == ["finetune [mini]", "replay [mini]", "diverging [mini]"]


def test_bad_input_is_one_clear_error(tmp_path, capsys):
    from clbench.reports.report import write_report

    with pytest.raises(UserError, match="does not exist"):
        write_report(tmp_path / "nope")
    (tmp_path / "plain").mkdir()
    with pytest.raises(UserError, match="not a clbench run folder"):
        write_report(tmp_path / "plain")
    (tmp_path / "empty" / "cells").mkdir(parents=True)
    (tmp_path / "empty" / "config.yaml").write_text("name: empty\n")
    with pytest.raises(UserError, match="no finished cells"):
        write_report(tmp_path / "empty")
    with pytest.raises(UserError, match="holds run folders"):  # the parent of run folders, e.g. runs/
        write_report(tmp_path)
    assert main(["report", str(tmp_path / "empty"), "--format", "html,svg"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "svg" in err and err.count("\n") == 1


def test_report_of_a_real_run_renders_in_headless_chromium(report_dir, chromium, tmp_path, say):
    from headless import check_page, inspect_page

    report = inspect_page(chromium, report_dir / "report.html", tmp_path / "browser")
    say(f"headless browser: {report.version}; {len(report.images)} figures decoded in {report_dir / 'report.html'}")
    check_page(report, len(FIGURES))
