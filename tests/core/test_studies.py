"""Published results (``results/<study>``): configs by content hash (a changed or missing one makes a study stale),
``clbench report --publish`` end to end on a tiny run, the bench scripts' :class:`Publication`, the docs pages.

Facts are checked against independent sources: SHA-256 computed here with hashlib, the CPU model read here from
/proc/cpuinfo, the cells' own JSON records read here with json, a mean over seeds computed here with numpy.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from clbench.protocols.cli import main
from clbench.studies import Publication, find_studies, read_study, stale_studies, write_study
from helpers import tiny_matrix, write_config

REPO = Path(__file__).resolve().parents[2]
PNG = b"\x89PNG\r\n\x1a\n"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def proc_cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.lower().startswith("model name"):
            return line.split(":", 1)[1].strip()
    pytest.skip("no model name in /proc/cpuinfo")


def docs_hooks():
    spec = importlib.util.spec_from_file_location("clbench_docs_hooks", REPO / "docs" / "hooks.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_a_study_is_stale_when_its_config_changes_or_disappears(tmp_path):
    cfg = tmp_path / "configs" / "c.yaml"
    cfg.parent.mkdir()
    cfg.write_text("seeds: [0]\n")
    write_study(tmp_path / "results" / "s", command=["clbench run configs/c.yaml"], configs=[cfg],
                host={"cores": 2}, files={"table.md": b"| a |\n"}, repo_root=tmp_path)
    study = read_study(tmp_path / "results" / "s")
    assert study.configs == {"configs/c.yaml": hashlib.sha256(b"seeds: [0]\n").hexdigest()}
    assert study.files == ["table.md"] and study.host == {"cores": 2}
    assert stale_studies(tmp_path / "results", tmp_path) == []
    cfg.write_text("seeds: [0, 1]\n")
    assert stale_studies(tmp_path / "results", tmp_path) == ["s: configs/c.yaml changed since the numbers were measured (rerun: clbench run configs/c.yaml)"]
    cfg.unlink()
    assert stale_studies(tmp_path / "results", tmp_path) == ["s: names configs/c.yaml, which no longer exists"]
    (tmp_path / "results" / "s" / "table.md").unlink()
    assert stale_studies(tmp_path / "results", tmp_path)[-1] == "s: lists table.md, which is missing"


def test_no_published_study_of_the_repository_is_stale():
    assert stale_studies(REPO / "results", REPO) == []
    for folder in find_studies(REPO / "results"):  # small, and every file the study lists is there
        study = read_study(folder)
        assert study.command and study.host, folder
        assert sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) < 2 * 2**20, folder
        assert not list(folder.rglob("*.pdf")) and not list(folder.rglob("*.html")), folder


def test_publish_output_keeps_the_printed_text_tables_and_the_load_at_start(tmp_path, monkeypatch, capsys):
    """Publication: stdout tee'd verbatim, tables as CSV and Markdown, host facts measured at begin (not at end)."""
    (tmp_path / ".git").mkdir()  # the repository root for relative paths
    cfg = tmp_path / "configs" / "b.yaml"
    cfg.parent.mkdir()
    cfg.write_text("x: 1\n")
    loads = iter([(1.25, 1.5, 1.75), (3.0, 2.0, 1.0)])
    monkeypatch.setattr(os, "getloadavg", lambda: next(loads))
    pub = Publication.begin(tmp_path / "results" / "bench_x", argv=[str(tmp_path / "bench" / "x.py"), "--n", "3"])
    print("line one | with a pipe")
    print("```fence inside```")
    df = pd.DataFrame({"variant": ["bare", "clbench"], "seconds": [1.5, 2.25]})
    path = pub.end(configs=[cfg], tables={"times": df})
    assert "line one | with a pipe" in capsys.readouterr().out  # still printed on the terminal
    study = read_study(path.parent)
    assert study.command == [f"python {tmp_path / 'bench' / 'x.py'} --n 3"]  # not a file: the path as given
    assert study.configs == {"configs/b.yaml": hashlib.sha256(b"x: 1\n").hexdigest()}
    assert study.host["load_average"] == [1.25, 1.5, 1.75] and study.host["load_average_end"] == [3.0, 2.0, 1.0]
    assert study.host["cpu"] == proc_cpu_model() and study.host["cores"] == len(os.sched_getaffinity(0))
    assert study.files == ["output.md", "times.csv"]
    md = (path.parent / "output.md").read_text()
    assert "````text\nline one | with a pipe\n```fence inside```\n````" in md
    assert "| variant | seconds |\n|---|---|---|"[:-4] in md and "| clbench | 2.25 |" in md
    pd.testing.assert_frame_equal(pd.read_csv(path.parent / "times.csv"), df)
    assert sys.stdout is not pub.tee
    assert Publication.begin(None).end() is None  # without --publish: inert
    with pytest.raises(Exception, match="cannot write"):
        (tmp_path / "afile").write_text("x")
        Publication.begin(tmp_path / "afile" / "s")


@pytest.mark.slow  # starts a Python process
def test_a_bench_script_publishes_what_it_prints(tmp_path):
    """bench/fisher_ratio.py --publish (a few seconds at this size): output.md holds its stdout verbatim."""
    out = tmp_path / "fisher_ratio"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "bench/fisher_ratio.py", "--epochs", "1", "--hidden", "16", "--publish", str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    study = read_study(out)
    printed = proc.stdout.replace(f"published {out}\n", "")
    assert f"```text\n{printed}```" in (out / "output.md").read_text()
    assert study.command == [f"python bench/fisher_ratio.py --epochs 1 --hidden 16 --publish {out}"]
    assert study.host["cpu"] == proc_cpu_model() and study.host["versions"]["torch"]


@pytest.mark.slow  # a real `clbench run` (training) and two reports
def test_report_publish_end_to_end(tmp_path, monkeypatch, capsys):
    (tmp_path / ".git").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CLBENCH_CACHE", str(tmp_path / "cache"))
    (tmp_path / "configs").mkdir()
    cfg = write_config(tmp_path / "configs" / "tiny.yaml", tiny_matrix(Path("runs"), "tiny", epochs=1))
    assert main(["run", "configs/tiny.yaml", "--quiet", "--no-report"]) == 0
    assert main(["report", "runs/tiny", "--out", "full"]) == 0
    assert main(["report", "runs/tiny", "--publish", "results/tiny"]) == 0
    assert "published: results/tiny" in capsys.readouterr().out
    study_dir = tmp_path / "results" / "tiny"
    study = read_study(study_dir)
    assert study.command == ["clbench run configs/tiny.yaml --quiet --no-report", "clbench report runs/tiny --publish results/tiny"]
    assert study.configs == {"configs/tiny.yaml": sha256(cfg)}
    # host facts: the cells' own records, read here
    recs = [json.loads(p.read_text()) for p in sorted((tmp_path / "runs" / "tiny" / "cells").glob("*.json"))]
    loads = np.array([r["host"]["load_average"] for r in recs])
    host = study.host
    assert host["cpu"] == proc_cpu_model() and host["cores"] == len(os.sched_getaffinity(0)) and host["cells"] == len(recs) == 4
    assert host["load_average"] == {"min": loads.min(0).tolist(), "max": loads.max(0).tolist()}
    assert host["device"] == f"cpu: {proc_cpu_model()}"
    import torch

    assert host["versions"]["torch"] == torch.__version__
    # the tables are the report's, and its ACC is the mean over seeds of the cells' acc
    for rel in ("tables/main.md", "tables/main.csv", "tables/main.tex", "tables/summary_split-digits.csv",
                "tables/summary_split-digits.md"):
        assert (study_dir / rel).read_bytes() == (tmp_path / "full" / rel).read_bytes(), rel
    main_table = pd.read_csv(study_dir / "tables" / "main.csv")
    for strategy in ("finetune", "replay"):
        accs = [r["metrics"]["acc"] for r in recs if r["strategy"] == strategy]
        row = main_table[(main_table.strategy == strategy) & (main_table.metric == "acc")].iloc[0]
        assert row["mean"] == pytest.approx(100 * np.mean(accs)) and row["seeds"] == 2
    figures = sorted(p.name for p in (tmp_path / "full" / "figures").glob("*.png"))
    assert figures and sorted(p.name for p in (study_dir / "figures").iterdir()) == figures
    assert all((study_dir / "figures" / f).read_bytes().startswith(PNG) for f in figures)
    assert not list(study_dir.rglob("*.pdf")) and not list(study_dir.rglob("*.html"))
    assert sum(p.stat().st_size for p in study_dir.rglob("*") if p.is_file()) < 2 * 2**20
    assert set(study.files) == {p.relative_to(study_dir).as_posix() for p in study_dir.rglob("*")
                               if p.is_file() and p.name != "study.yaml"}
    assert stale_studies(tmp_path / "results", tmp_path) == []
    # the docs pages include these files
    hooks = docs_hooks()
    monkeypatch.setattr(hooks, "REPO", tmp_path)
    page = hooks.study_page(study_dir)
    assert (study_dir / "tables" / "main.md").read_text().split("\n", 2)[2].strip() in page  # the table itself
    assert all(f"](figures/{f})" in page for f in figures) and "status: current" in page
    index = hooks.results_index([study_dir])
    assert "[tiny](tiny/index.md)" in index and "`clbench run configs/tiny.yaml --quiet --no-report`" in index
    # a changed config: publishing again is refused, and the published study is stale
    cfg.write_text(cfg.read_text() + "# changed\n")
    assert main(["report", "runs/tiny", "--publish", "results/tiny"]) == 2
    assert "configs/tiny.yaml changed since its run was made" in capsys.readouterr().err
    assert stale_studies(tmp_path / "results", tmp_path)[0].startswith("tiny: configs/tiny.yaml changed")
    assert "**stale**" in hooks.results_index([study_dir])


def test_publish_bad_input_is_one_clear_error(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    run = tmp_path / "runs" / "r"
    (run / "cells").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(tiny_matrix(tmp_path / "runs", "r")))
    for args, message in (([str(run), "--publish", str(tmp_path / "s")], "has no finished cells"),
                          ([str(tmp_path / "nope"), "--publish", str(tmp_path / "s")], "does not exist")):
        assert main(["report", *args]) == 2
        err = capsys.readouterr().err
        assert message in err and err.startswith("error: ") and err.count("\n") == 1
    assert not (tmp_path / "s").exists()


def test_publish_needs_the_recorded_command_and_a_writable_folder(tmp_path, capsys):
    """A run folder from before run.yaml: one error naming the fix; a folder under a file: cannot write."""
    data = tiny_matrix(tmp_path / "runs", "r", seeds=(0,), epochs=1)
    data["strategies"] = data["strategies"][:1]
    assert main(["run", str(write_config(tmp_path / "r.yaml", data)), "--quiet", "--no-report"]) == 0
    run = tmp_path / "runs" / "r"
    (run / "run.yaml").unlink()  # as in a run folder made before clbench recorded its command
    assert main(["report", str(run), "--publish", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert "does not record the command that made it" in err and "--no-report" in err and err.count("\n") == 1
    (run / "run.yaml").write_text(yaml.safe_dump({"invocations": [{"command": "clbench run r.yaml", "cwd": str(tmp_path)}]}))
    (tmp_path / "afile").write_text("x")
    assert main(["report", str(run), "--publish", str(tmp_path / "afile" / "s")]) == 2
    err = capsys.readouterr().err
    assert f"cannot write {tmp_path / 'afile'}" in err and err.count("\n") == 1


def test_the_docs_results_index_says_when_there_is_no_study(tmp_path):
    assert "No study has been published yet." in docs_hooks().results_index(find_studies(tmp_path))


def test_run_yaml_records_each_distinct_command_once(tmp_path, monkeypatch):
    from clbench.studies import read_invocations, record_invocation

    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("seeds: [0]\n")
    record_invocation(tmp_path / "missing", ["run", "c.yaml"], "c.yaml")
    assert not (tmp_path / "missing").exists()  # nothing ran: nothing recorded
    run = tmp_path / "run"
    run.mkdir()
    for argv in (["run", "c.yaml"], ["run", "c.yaml", "--seeds", "0", "1"], ["run", "c.yaml"]):  # a resume repeats one
        record_invocation(run, argv, "c.yaml")
    got = read_invocations(run)
    assert [e["command"] for e in got] == ["clbench run c.yaml --seeds 0 1", "clbench run c.yaml"]
    assert {e["config_sha256"] for e in got} == {hashlib.sha256(b"seeds: [0]\n").hexdigest()}
    assert got[0]["cwd"] == str(tmp_path) and got[0]["config_path"] == str(cfg)
    cfg.write_text("seeds: [0, 1]\n")
    record_invocation(run, ["run", "c.yaml", "--name", "a b"], "c.yaml")
    assert read_invocations(run)[-1]["command"] == "clbench run c.yaml --name 'a b'"
    assert read_invocations(run)[-1]["config_sha256"] == hashlib.sha256(b"seeds: [0, 1]\n").hexdigest()
