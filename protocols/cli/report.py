"""``clbench report``: tables, figures and statistics of one or more run folders."""

from __future__ import annotations

import argparse

import os
import shlex
from collections.abc import Sequence
from pathlib import Path

from clbench.errors import UserError
from clbench.files import ensure_folder
from clbench.studies import (file_sha256, hosts_summary, read_invocations, read_study, relative_to_root,
                             repo_root_of, write_study)

#: the report's files a published study keeps (figures as PNG only, at a smaller resolution than the report's)
PUBLISH_DPI = 110


def add_parser(sub) -> None:
    p = sub.add_parser("report", help="tables, plots, statistics and report.html of one or more run folders",
                       description="Compare the cells of one or more run folders: a main table across benchmarks "
                                   "(LaTeX, Markdown, CSV), per-benchmark tables and paired tests, figures (PDF and "
                                   "PNG) and one self-contained report.html. The same strategy with an identical "
                                   "configuration in several folders is one row with its seeds pooled.")
    p.add_argument("runs", nargs="*", metavar="RUN", help="run folder(s) written by clbench run / tune; several are compared")
    p.add_argument("--config", metavar="YAML", help="report config: runs, strategies, benchmarks, rename, merge, spread, "
                                                    "band, main_metrics, formats, out (the options below override it)")
    p.add_argument("--out", help="output folder (default RUN/report; several runs: report-<a>+<b> next to the first)")
    p.add_argument("--format", default=None, help="comma-separated subset of html,md,png,pdf (default all)")
    p.add_argument("--strategies", metavar="A,B,...", help="strategies to show, in this order (labels as shown, configured or renamed)")
    p.add_argument("--benchmarks", metavar="X,Y,...", help="benchmarks to show, in this order")
    p.add_argument("--rename", action="append", metavar="OLD=NEW", help="rename a strategy or benchmark (repeatable)")
    p.add_argument("--separate-runs", dest="separate_runs", action="store_true",
                   help="keep every run folder's cells apart instead of pooling identical configurations "
                        "(e.g. the same config run on two machines)")
    p.add_argument("--spread", choices=["std", "ci"], help="what ± shows in tables and whiskers (default std)")
    p.add_argument("--band", choices=["auto", "std", "ci", "minmax", "none"],
                   help="band of the seen-accuracy curves (default auto: ci with 5 or more seeds, else std)")
    p.add_argument("--main-metrics", dest="main_metrics", metavar="M,...",
                   help="columns of the main table per benchmark, e.g. acc,aia,a_last (default acc,aia; blurry streams a_last first)")
    p.add_argument("--publish", metavar="DIR",
                   help="write the study DIR (e.g. results/<study>): report.md, the main table (md, csv, tex), the "
                        "per-benchmark summaries (md, csv), PNG figures and study.yaml (the clbench run commands the "
                        "run folders recorded, their configs' content hashes, the host facts the cells recorded, this "
                        "command); no report.html, no PDF")
    p.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    from clbench.reports.options import ReportOptions, load_report_config, parse_formats, parse_rename, split_names
    from clbench.reports.report import write_report

    options = load_report_config(args.config) if args.config else ReportOptions()
    rename = parse_rename(args.rename)
    options = options.updated(strategies=split_names(args.strategies), benchmarks=split_names(args.benchmarks),
                              rename={**options.rename, **rename} if rename else None,
                              merge=False if args.separate_runs else None, spread=args.spread, band=args.band,
                              main_metrics=split_names(args.main_metrics),
                              formats=parse_formats(args.format) if args.format is not None else None)
    if not args.runs and not options.runs:
        raise UserError("no run folder given; fix: clbench report RUN [RUN ...] or a --config with runs:, "
                        "e.g. clbench report runs/quickstart")
    if args.publish:
        path = publish_report(args.runs, args.publish, options, getattr(args, "argv", None))
        print(f"published: {path.parent} ({len(read_study(path.parent).files)} files)")
        return 0
    out = write_report(args.runs, args.out, None, options)
    print(f"report: {out / 'report.html' if 'html' in options.formats else out}")
    return 0


def _in_root(command: str, cwd: str | None, root: Path) -> str:
    """``command`` as run from the repository root (prefixed with ``cd <folder> &&`` when it ran elsewhere)."""
    if not cwd or Path(cwd).resolve() == root:
        return command
    return f"cd {shlex.quote(relative_to_root(cwd, root))} && {command}"


def publish_report(run_dirs: Sequence[str], folder: str | Path, options, argv: Sequence[str] | None = None) -> Path:
    """The report of ``run_dirs`` published as the study ``folder``; return the path of its ``study.yaml``.

    Files: ``report.md`` (the report in Markdown, figures linked), ``tables/main.{md,csv,tex}``,
    ``tables/summary_<bench>.{md,csv}``, ``figures/<name>.png`` (:data:`PUBLISH_DPI` dpi). ``study.yaml``:
    the commands each run folder recorded in its ``run.yaml`` (``clbench run``/``tune``, from the repository
    root) and this report command; the configs with the SHA-256 their content had when the run was made (it
    must equal the file's now, else the numbers belong to an older config); the host facts its cells recorded
    (:func:`clbench.studies.hosts_summary`). Bad input is one :class:`UserError`.
    """
    from clbench.reports.data import load_run, run_labels
    from clbench.reports.document import render_markdown
    from clbench.reports.plots import figure_bytes
    from clbench.reports.report import build_report

    import matplotlib.pyplot as plt

    folder = Path(folder)
    root = repo_root_of(folder.parent)
    paths = list(dict.fromkeys(Path(p) for p in (*options.runs, *run_dirs)))
    if not paths:
        raise UserError("no run folder given; fix: clbench report RUN [RUN ...] --publish results/<study>")
    runs = [load_run(p, label) for p, label in zip(paths, run_labels([p.resolve() for p in paths]))]
    commands, configs = [], {}
    for p in paths:
        invocations = read_invocations(p)
        if not invocations:
            raise UserError(f"run folder {p} does not record the command that made it ({p / 'run.yaml'} is missing: "
                            f"it was made before clbench recorded it); fix: rerun that `clbench run CONFIG ...` command "
                            f"with --no-report (finished cells are kept, nothing is trained again), then publish")
        for inv in invocations:
            commands.append(_in_root(str(inv["command"]), inv.get("cwd"), root))
            if inv.get("config_path") and inv.get("config_sha256"):
                configs[relative_to_root(inv["config_path"], root)] = (Path(inv["config_path"]), inv["config_sha256"])
    for rel, (path, digest) in configs.items():
        if not path.is_file():
            raise UserError(f"the config {rel} of the published runs no longer exists; fix: publish runs of a config "
                            f"that is in the repository")
        if file_sha256(path) != digest:
            raise UserError(f"{rel} changed since its run was made (the numbers belong to its earlier content); fix: "
                            f"rerun `clbench run {rel}` (cells whose entries did not change are kept), then publish")
    ensure_folder(folder)  # a folder that cannot be written fails before the figures are drawn
    options = options.updated(formats=("md", "png"))
    title, built, _ = build_report(runs, options, keep_figures=True, render=False)
    files = {"report.md": render_markdown(title, built.blocks).encode()}
    for rel, data in built.files.items():
        name = Path(rel).name
        if rel.startswith("tables/") and (name.startswith("main.") or (name.startswith("summary_")
                                                                          and not name.endswith(".tex"))):
            files[rel] = data
    for name, fig in built.figures.items():
        files[f"figures/{name}.png"] = figure_bytes(fig, "png", dpi=PUBLISH_DPI)
        plt.close(fig)
    here = Path.cwd().resolve()
    report_command = " ".join(["clbench", *map(shlex.quote, argv if argv is not None
                                               else ["report", *map(str, run_dirs), "--publish", str(folder)])])
    commands.append(_in_root(report_command, str(here), root))
    host = hosts_summary([r.host for run in runs for r in run.records], [r.versions for run in runs for r in run.records])
    return write_study(folder, command=list(dict.fromkeys(commands)), configs={k: d for k, (_, d) in configs.items()},
                       host=host, files=files, repo_root=root)
