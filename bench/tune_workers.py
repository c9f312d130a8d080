"""Phase-1 tuning on 1 vs 2 workers: wall time of the same random-search study, and that both give the same trials.

    CLBENCH_DATA=../shared/data python bench/tune_workers.py [--trials 8] [--repeats 2] [--epochs 3]

The study: finetune (MLP 2x256, --epochs per experience) on split digits, classes 0-4 (D_HT) with 2 tuning seeds, random
search over lr and batch size, then the one phase-2 cell on classes 5-9 (the same in both timings). Runs
alternate 1 and 2 workers (interleaved, so machine load drifts hit both); prints each wall time, the median
ratio, whether both gave the same trials, the load average before and after, and the host. Each trial of the
2-worker run starts a fresh worker process (about a second): with trials of a second or less, or on a machine
whose cores are busy, 2 workers are slower than 1; raise --epochs to measure the parallel regime.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from clbench.host import host_facts
from clbench.protocols.executors import ProcessExecutor, SerialExecutor
from clbench.protocols.tune import run_tune
from clbench.protocols.tune_config import parse_tune_config
from clbench.studies import Publication


def config(out: Path, name: str, trials: int, epochs: int = 3) -> dict:
    return {"name": name, "output": str(out), "seeds": [0],
            "tuning": {"name": "split_digits", "classes": [0, 1, 2, 3, 4], "n_experiences": 5},
            "evaluation": {"name": "split_digits", "classes": [5, 6, 7, 8, 9], "n_experiences": 5},
            "strategies": [{"name": "finetune", "epochs": epochs, "hidden": [256, 256], "label": "ft"}],
            "search": {"sampler": "random", "n_trials": trials, "seeds": [0, 1], "protocol": "two-phase"}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=3, help="epochs per experience: longer trials amortise a worker's start-up")
    ap.add_argument("--publish", metavar="DIR", help="publish what this prints, the command and host facts as the study DIR")
    args = ap.parse_args()
    pub = Publication.begin(args.publish)
    load0 = os.getloadavg()
    times: dict[int, list[float]] = {1: [], 2: []}
    trials: dict[int, list] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            for workers in (1, 2):
                executor = SerialExecutor() if workers == 1 else ProcessExecutor(workers=2)
                tc = parse_tune_config(config(Path(tmp), f"w{workers}r{r}", args.trials, args.epochs))
                t0 = time.perf_counter()
                summary = run_tune(tc, quiet=True, executor=executor)
                wall = time.perf_counter() - t0
                times[workers].append(wall)
                trials[workers] = [(t["params"], t["value"]) for t in summary["strategies"][0]["tuning"]["trials"]]
                print(f"repeat {r}: {workers} worker(s): {wall:.1f} s")
    ratio = statistics.median(times[1]) / statistics.median(times[2])
    print(f"median wall: 1 worker {statistics.median(times[1]):.1f} s, 2 workers {statistics.median(times[2]):.1f} s; "
          f"speed-up {ratio:.2f}x")
    print(f"same trials with 1 and 2 workers: {trials[1] == trials[2]}")
    h = host_facts()
    print(f"load average before {load0}, after {os.getloadavg()}; {h['cpu']}, {h['cores']} cores")
    pub.end()


if __name__ == "__main__":
    main()
