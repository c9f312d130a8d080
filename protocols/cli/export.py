"""``clbench export``: every cell of run folders as tracked runs in TensorBoard, MLflow or Weights & Biases."""

from __future__ import annotations

import argparse

from clbench.reports.trackers import TRACKERS


def add_parser(sub) -> None:
    p = sub.add_parser("export", help="write every cell of run folders to TensorBoard, MLflow or W&B (idempotent)")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folder(s) written by clbench run / tune")
    p.add_argument("--to", required=True, choices=TRACKERS, help="the tracker (an optional extra: pip install 'clbench[KIND]')")
    p.add_argument("--uri", help="TensorBoard log folder (default RUN/../tensorboard), W&B folder (default RUN/..), or "
                                 "MLflow tracking URI (default $MLFLOW_TRACKING_URI, else sqlite:///RUN/../mlflow.db)")
    p.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    from clbench.reports.trackers import export_run

    for run in args.runs:
        s = export_run(run, args.to, args.uri)
        counts = ", ".join(f"{n} {what}" for what, n in s.counts.items())
        line = f"{s.run_dir}: {sum(s.counts.values())} cells to {s.kind} at {s.location} ({counts})"
        line += "; with its report" if s.report else "; no report folder (clbench report RUN writes one)"
        if s.stale:
            line += f"; {s.stale} record(s) of an earlier config left out"
        print(line)
    return 0
