"""Executors (issue 7): the local process pool and Ray give the serial results; dead cells get a reason."""

from __future__ import annotations

import json
import tempfile

import pytest
from helpers import stable_table, strategy_module, tiny_matrix

from clbench.protocols.config import parse_config
from clbench.protocols.executors import ProcessExecutor, RayExecutor, SerialExecutor, make_executor
from clbench.protocols.runner import run_matrix


@pytest.fixture(scope="module")
def serial_table(tmp_path_factory):
    """The reference: the tiny matrix run serially in this process."""
    out = tmp_path_factory.mktemp("serial")
    run_matrix(parse_config(tiny_matrix(out, "m")), quiet=True)
    return stable_table(out / "m")


def test_make_executor_kinds():
    assert isinstance(make_executor("local", 1), SerialExecutor)
    assert isinstance(make_executor("local", 1, timeout=5), ProcessExecutor)  # a timeout needs a killable worker
    pool = make_executor("local", 2)
    assert isinstance(pool, ProcessExecutor) and pool.workers == 2 and pool.threads >= 1
    assert isinstance(make_executor("ray", 1, address="127.0.0.1:1"), RayExecutor)  # nothing connects yet


def test_two_local_workers_give_the_serial_table(tmp_path, serial_table):
    records = run_matrix(parse_config(tiny_matrix(tmp_path, "m", workers=2)), quiet=True)
    assert len(records) == 4 and all(r.status == "ok" for r in records)
    assert stable_table(tmp_path / "m").equals(serial_table)
    spans = sorted((r.started, r.finished) for r in records)
    assert any(b[0] < a[1] for a, b in zip(spans, spans[1:])), "two cells should have run at the same time"


def test_ray_executor_gives_the_serial_table(tmp_path, serial_table):
    ray = pytest.importorskip("ray")
    with tempfile.TemporaryDirectory(prefix="ray", dir="/tmp") as tmp:  # short path: Ray's socket names must fit
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=tmp)
        try:
            records = run_matrix(parse_config(tiny_matrix(tmp_path, "m", executor="ray")), quiet=True)
        finally:
            ray.shutdown()
    assert all(r.status == "ok" for r in records)
    assert stable_table(tmp_path / "m").equals(serial_table)


def test_timeout_and_killed_worker_are_recorded_and_retried_only_when_asked(tmp_path, monkeypatch):
    marker = tmp_path / "die"
    marker.touch()
    mod = strategy_module(tmp_path, "dying", f"""
class Sleepy(Finetune):
    def train_experience(self, exp):
        time.sleep(60)

class Killed(Finetune):
    def train_experience(self, exp):
        if os.path.exists({str(marker)!r}):
            os.kill(os.getpid(), signal.SIGKILL)  # what the out-of-memory killer does
        super().train_experience(exp)
""")
    monkeypatch.syspath_prepend(str(tmp_path))
    data = tiny_matrix(tmp_path, "m", seeds=(0,), workers=2, timeout=3)
    data["strategies"] = [{"name": f"{mod}:Sleepy", "hidden": [16]}, {"name": f"{mod}:Killed", "hidden": [16]},
                          {"name": "finetune", "hidden": [16]}]
    cfg = parse_config(data)
    records = {r.strategy: r for r in run_matrix(cfg, quiet=True)}
    assert records["finetune"].status == "ok"  # the matrix went on
    sleepy = records[f"{mod}:Sleepy"]
    assert sleepy.status == "failed" and "timeout" in sleepy.error and 3 <= sleepy.finished - sleepy.started < 60
    killed = records[f"{mod}:Killed"]
    assert killed.status == "failed" and "SIGKILL" in killed.error and "out-of-memory" in killed.error

    marker.unlink()
    again = {r.strategy: r for r in run_matrix(cfg, quiet=True)}  # without --retry-failed: nothing reruns
    assert again[f"{mod}:Killed"] == killed
    cfg.timeout = None
    cfg.strategies = cfg.strategies[1:]  # leave the sleeper out
    retried = {r.strategy: r for r in run_matrix(cfg, quiet=True, retry_failed=True)}
    assert retried[f"{mod}:Killed"].status == "ok"
    assert json.dumps(retried["finetune"].to_dict(), sort_keys=True) == json.dumps(records["finetune"].to_dict(), sort_keys=True)


def test_ray_executor_without_ray_installed_is_one_clear_error(monkeypatch, tmp_path, capsys):
    """--executor ray without the extra: exit 2 naming the fix, before anything runs (was a ModuleNotFoundError)."""
    import sys

    from clbench.errors import UserError
    from clbench.protocols.cli import main as cli_main
    from clbench.protocols.executors import make_executor

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(UserError, match=r"pip install 'clbench\[ray\]'"):
        make_executor("ray")
    assert cli_main(["run", "--executor", "ray", "--output", str(tmp_path), "--quiet"]) == 2
    assert "clbench[ray]" in capsys.readouterr().err
    assert not (tmp_path / "quickstart" / "cells").exists() or not any((tmp_path / "quickstart" / "cells").iterdir())
