"""`clbench report` on a real small run: figure files, self-contained HTML, failed cells, headless Chromium.

One module-scoped run (split_digits 5 x 2 classes and permuted_digits 3 tasks, 2 seeds, a tiny MLP,
one epoch; a third strategy diverges so its cells fail) made through ``clbench run``, which also
writes the report at the end (the automatic-report path); every test reads that report.
"""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from clbench.errors import UserError
from clbench.protocols.cli import main

BENCH_SLUGS = ("split-digits", "permuted-digits")
FIGURES = [f"{kind}_{b}" for b in BENCH_SLUGS for kind in ("seen_accuracy", "accuracy_matrix", "final_bars", "pareto")] \
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
        assert cols[3] == "failed" and cols[4] == "failed", cols  # ACC and AIA columns say failed
        assert "0.00" not in md_row
    failed = pd.read_csv(report_dir / "tables" / "failed_cells.csv")
    assert len(failed) == 4 and set(failed.strategy) == {"diverging"} and (failed.status == "failed").all()
    assert failed.error.str.contains("non-finite").all()
    ranks = pd.read_csv(report_dir / "tables" / "ranks.csv")
    assert "diverging" not in set(ranks.series)  # not ranked as if it scored 0
    html = (report_dir / "report.html").read_text()
    assert 'class="failed"><td>diverging</td><td>0</td><td>2</td><td>failed</td>' in html
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
    other = tmp_path / "mini_copy"
    shutil.copytree(run_dir, other, ignore=shutil.ignore_patterns("report"))
    out = tmp_path / "cmp"
    assert main(["report", str(run_dir), str(other), "--out", str(out), "--format", "html"]) == 0
    assert str(out / "report.html") in capsys.readouterr().out
    text = (out / "report.html").read_text()
    assert "replay [mini]" in text and "replay [mini_copy]" in text
    assert not (out / "report.md").exists() and not list(out.glob("figures/*.pdf"))
    summary = pd.read_csv(out / "tables" / "summary_split-digits.csv")
    assert set(summary.run) == {"mini", "mini_copy"}


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


CHROMIUM = next((p for p in (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")) if p), None)
CHROME_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run", "--hide-scrollbars"]
PROBE = """<script>
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.setAttribute('data-images-loaded', ok + '/' + imgs.length);
});
</script></body>"""


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian: apt-get install -y chromium; .ci/run installs it)")
def test_html_renders_in_headless_chromium_with_figures_loaded(report_dir, tmp_path):
    from PIL import Image

    page = report_dir / "report.html"
    probe = tmp_path / "probe.html"  # the page plus a probe script counting decoded images (naturalWidth > 0)
    probe.write_text(page.read_text().replace("</body>", PROBE))
    dom = subprocess.run([CHROMIUM, *CHROME_FLAGS, f"--user-data-dir={tmp_path / 'ud1'}", "--virtual-time-budget=15000",
                          "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=180)
    m = re.search(r'data-images-loaded="(\d+)/(\d+)"', dom.stdout)
    assert m, dom.stderr[-2000:]
    assert int(m.group(1)) == int(m.group(2)) == len(FIGURES)
    shot = tmp_path / "shot.png"
    subprocess.run([CHROMIUM, *CHROME_FLAGS, f"--user-data-dir={tmp_path / 'ud2'}", "--window-size=1280,3000",
                    f"--screenshot={shot}", page.as_uri()], capture_output=True, text=True, timeout=180)
    assert shot.exists(), "chromium wrote no screenshot"
    with Image.open(shot) as im:
        assert im.size == (1280, 3000)
        hsv = np.asarray(im.convert("HSV"), dtype=int)
    coloured = int(((hsv[..., 1] > 120) & (hsv[..., 2] > 60)).sum())  # plot lines, bars, heatmaps; text is grey
    assert coloured > 5000, f"only {coloured} saturated pixels: figures not drawn"
