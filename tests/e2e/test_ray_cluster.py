"""A real Ray cluster started with ``ray start``: a head node and a second (worker) node on this machine.

The cluster runs with token authentication (the default of ``ray start``; the token is passed through
``RAY_AUTH_TOKEN``, so nothing is read from or written to ``~/.ray``), in its own ``--temp-dir``, with every
port it opens chosen free (no clash with another Ray instance on the machine). The worker node listens on
127.0.0.2 so that a driver on this machine attaches to the head's raylet, never to the node the test kills.
At the end only the processes this module started are stopped (those naming its temp dir or its GCS port,
and their children): ``ray stop`` would stop every Ray instance of the machine.

Against it, with ``clbench`` child processes (``--executor ray --address``):

1. a matrix gives exactly the results of the in-process run;
2. phase-1 tuning trials run as Ray tasks and give the study (and choice) of the in-process run;
3. the worker node's raylet is killed (SIGKILL) while a cell runs on it: that cell is recorded failed with the
   reason (the node died), the other cell completes, and ``--retry-failed`` runs the failed cell again on the
   surviving head node (the results then equal the in-process run). This test kills a node, so it runs last.

Node failure detection is shortened through Ray's own settings (``RAY_health_check_period_ms`` etc. in the
nodes' environment) so that the kill test takes seconds, not the default 15 s.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from helpers import STABLE, child_env, stable_table, tiny_matrix, write_config

from clbench.protocols.config import parse_config
from clbench.protocols.runner import run_matrix
from clbench.protocols.tune import run_tune
from clbench.protocols.tune_config import parse_tune_config

pytestmark = pytest.mark.slow
psutil = pytest.importorskip("psutil", reason="psutil (a dependency of ray) is needed to stop the test's own cluster")
pytest.importorskip("ray", reason="Ray is not installed: pip install -e '.[ray]'")


def free_ports(n: int) -> list[int]:
    """``n`` distinct free TCP ports on this machine."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def ray_cli() -> str:
    here = Path(sys.executable).parent / "ray"
    return str(here) if here.exists() else (shutil.which("ray") or "ray")


def node_ports(ports: list[int]) -> list[str]:
    """The per-node ports ``ray start`` would otherwise pick from fixed defaults (52365, 8265, ...)."""
    names = ("--dashboard-agent-listen-port", "--dashboard-agent-grpc-port", "--runtime-env-agent-port",
             "--metrics-export-port", "--node-manager-port", "--object-manager-port")
    return [f"{name}={port}" for name, port in zip(names, ports)]


class Cluster:
    """The processes of a cluster started by this test: found by its temp dir and GCS port, stopped by PID."""

    def __init__(self, temp: Path, port: int, env: dict[str, str]) -> None:
        self.temp, self.port, self.env = temp, port, env
        self.address = f"127.0.0.1:{port}"
        self.worker_manager_port = 0

    def processes(self) -> list:
        """Every live process naming this cluster's temp dir or GCS port, and their children."""
        found = {}
        for p in psutil.process_iter(["pid", "cmdline", "status"]):
            if p.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            cmd = " ".join(p.info["cmdline"] or []) + " "
            if str(self.temp) in cmd or f":{self.port} " in cmd:
                found[p.pid] = p
        for p in list(found.values()):
            try:
                found.update({c.pid: c for c in p.children(recursive=True)})
            except psutil.NoSuchProcess:
                pass
        found.pop(os.getpid(), None)
        return list(found.values())

    def raylet(self, node_manager_port: int):
        for p in self.processes():
            try:
                cmd = " ".join(p.cmdline())
            except psutil.NoSuchProcess:
                continue
            if "raylet/raylet" in cmd and f"--node_manager_port={node_manager_port}" in cmd:
                return p
        raise AssertionError(f"no raylet with node manager port {node_manager_port}")

    def stop(self) -> None:
        """SIGKILL every process of this cluster (its state is thrown away with its temp dir)."""
        procs = self.processes()
        for p in procs:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(procs, timeout=10)


def start(args: list[str], env: dict[str, str], log: Path) -> None:
    with open(log, "w") as out:
        proc = subprocess.run([ray_cli(), "start", *args], env=env, stdout=out, stderr=subprocess.STDOUT, timeout=180)
    if proc.returncode != 0:
        raise RuntimeError(f"ray start {' '.join(args)} failed:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def cluster():
    """A head node (1 CPU) and a worker node (1 CPU) started with ``ray start``; stopped (by PID) at the end."""
    temp = Path(tempfile.mkdtemp(prefix="clbench-ray-", dir="/tmp"))  # short: Ray's socket paths must stay short
    env = child_env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(16), RAY_USAGE_STATS_ENABLED="0",
                    OMP_NUM_THREADS="1", RAY_health_check_period_ms="1000", RAY_health_check_timeout_ms="1000",
                    RAY_health_check_failure_threshold="4", RAY_health_check_initial_delay_ms="1000")
    port, client, dashboard, *ports = free_ports(15)
    c = Cluster(temp, port, env)
    try:
        start(["--head", f"--port={port}", "--node-ip-address=127.0.0.1", "--num-cpus=1", f"--temp-dir={temp}",
               "--include-dashboard=false", f"--dashboard-port={dashboard}", f"--ray-client-server-port={client}",
               "--disable-usage-stats", *node_ports(ports[:6])], env, temp / "head.log")
        c.worker_manager_port = ports[10]
        start([f"--address={c.address}", "--node-ip-address=127.0.0.2", "--num-cpus=1", f"--temp-dir={temp}",
               "--disable-usage-stats", *node_ports(ports[6:12])], env, temp / "worker.log")
        yield c
    finally:
        c.stop()
        shutil.rmtree(temp, ignore_errors=True)


def cli(cluster: Cluster, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    """``clbench ARGS --executor ray --address ADDR`` as a driver process on this machine."""
    return subprocess.run([sys.executable, "-m", "clbench.protocols.cli", *args, "--executor", "ray", "--address",
                           cluster.address, "--no-report"], env=cluster.env, capture_output=True, text=True, timeout=timeout)


def test_a_matrix_on_the_cluster_equals_the_in_process_run(cluster, tmp_path):
    data = tiny_matrix(tmp_path / "runs", "m")  # 2 strategies x 2 seeds
    cfg = write_config(tmp_path / "m.yaml", data)
    proc = cli(cluster, "run", str(cfg), "--quiet")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run_matrix(parse_config(dict(data, output=str(tmp_path / "ref"))), quiet=True)
    assert stable_table(tmp_path / "runs" / "m").equals(stable_table(tmp_path / "ref" / "m"))


def tune_data(output: Path, data_root: Path) -> dict:
    return {"name": "t", "output": str(output), "seeds": [0], "data_root": str(data_root),
            "tuning": {"name": "split_digits", "classes": [0, 1, 2, 3, 4], "n_experiences": 5},
            "evaluation": {"name": "split_digits", "classes": [5, 6, 7, 8, 9], "n_experiences": 5},
            "strategies": [{"name": "tune_toys:ToyNCM"}],
            "search": {"sampler": "random", "n_trials": 6, "seeds": [0], "protocol": "two-phase", "sampler_seed": 3}}


def test_phase_1_trials_run_on_the_cluster_and_give_the_in_process_study(cluster, tmp_path, data_root):
    cfg = tmp_path / "t.yaml"
    cfg.write_text(yaml.safe_dump(tune_data(tmp_path / "runs", data_root)))
    proc = cli(cluster, "tune", str(cfg), "--quiet")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    on_cluster = json.loads((tmp_path / "runs" / "t" / "tune.json").read_text())
    run_tune(parse_tune_config(tune_data(tmp_path / "ref", data_root), default_name="t"), quiet=True)
    ref = json.loads((tmp_path / "ref" / "t" / "tune.json").read_text())

    def study(summary: dict) -> list:
        return sorted((t["number"], t["state"], json.dumps(t["params"], sort_keys=True), t["value"])
                      for t in summary["strategies"][0]["tuning"]["trials"])

    assert study(on_cluster) == study(ref)
    assert len(study(ref)) == 6
    for key in ("chosen", "phase1_score"):
        assert on_cluster["strategies"][0][key] == ref["strategies"][0][key]
    assert on_cluster["strategies"][0]["phase2"]["per_seed"] == ref["strategies"][0]["phase2"]["per_seed"]


def test_killing_a_worker_nodes_raylet_fails_its_cell_and_retry_failed_reruns_it(cluster, tmp_path, data_root):
    # two cells of 5 x 1 s: one on each node (1 CPU each); ToyNCM's accuracy does not depend on the delay
    data = {"name": "k", "output": str(tmp_path / "runs"), "seeds": [0, 1], "data_root": str(data_root),
            "benchmarks": [{"name": "split_digits", "n_experiences": 5}],
            "strategies": [{"name": "tune_toys:ToyNCM", "shift": 0, "knob": 0.3, "delay": 1.0}]}
    cfg = write_config(tmp_path / "k.yaml", data)
    raylet = cluster.raylet(cluster.worker_manager_port)
    log = open(tmp_path / "driver.log", "w")
    driver = subprocess.Popen([sys.executable, "-m", "clbench.protocols.cli", "run", str(cfg), "--executor", "ray",
                               "--address", cluster.address, "--no-report", "--quiet"],
                              env=cluster.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        busy = False
        while time.monotonic() < deadline and driver.poll() is None and not busy:
            time.sleep(0.2)
            # the worker node's raylet starts a worker process that takes the cell's name as its title
            busy = any("clbench-cell" in " ".join(c.cmdline()) for c in raylet.children(recursive=True) if c.is_running())
        assert busy, "no cell ever ran on the worker node: " + (tmp_path / "driver.log").read_text()
        time.sleep(1.0)
        raylet.send_signal(signal.SIGKILL)
        driver.wait(timeout=120)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
        log.close()
    output = (tmp_path / "driver.log").read_text()
    assert driver.returncode == 1, output  # a cell failed: the run says so

    cells = pd.read_csv(tmp_path / "runs" / "k" / "cells.csv")
    assert sorted(cells.status) == ["failed", "ok"], cells
    reason = cells.loc[cells.status == "failed", "error"].iloc[0]
    assert "NodeDiedError" in reason and "node it was running on is dead" in reason, reason

    proc = cli(cluster, "run", str(cfg), "--retry-failed", "--quiet")  # the head node alone runs it now
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (pd.read_csv(tmp_path / "runs" / "k" / "cells.csv").status == "ok").all()
    # the accuracies equal an in-process run of the same cells (without the delay, which changes nothing else)
    ref = dict(data, output=str(tmp_path / "ref"), strategies=[dict(data["strategies"][0], delay=0.0)])
    run_matrix(parse_config(ref), quiet=True)
    keep = [c for c in STABLE if c not in ("strategy", "cell_id")]
    assert stable_table(tmp_path / "runs" / "k")[keep].equals(stable_table(tmp_path / "ref" / "k")[keep])
