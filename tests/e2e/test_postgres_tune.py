"""Several ``clbench tune`` processes sharing each study through a real PostgreSQL server.

A private server (Debian's ``postgresql`` package: ``initdb`` + ``pg_ctl``) runs in a temporary folder on a
free local port for the module and is stopped at the end. Against it:

* two processes with the same config and ``--storage`` (different ``--output``: each holds its own run
  folder) share every study's budget exactly: ``n_trials`` completed trials, no parameter set run twice,
  every trial run by exactly one process, both exit 0;
* "phase 2 once" with two run folders means: each run folder gets one phase-2 run on the values both
  processes chose (a process that finds the budget used waits for the trials still running elsewhere, so
  both choose from the complete study), and the two folders' phase-2 results are identical;
* ``kill -9`` of one process in the middle of a trial: the survivor fails the dead trial once its heartbeat
  is stale (``--heartbeat 1``: after 2 s) and runs its parameters again; a rerun of the killed command finds
  the study complete and only runs its phase 2;
* with the random sampler, trial n's parameters depend only on (sampler_seed, n), so the final choice
  (and tune.json's chosen values and scores) equals what one process alone chooses with its own SQLite file.
"""

from __future__ import annotations

import glob
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest
import yaml
from helpers import child_env

from clbench.protocols.tune import run_tune
from clbench.protocols.tune_config import parse_tune_config

pytestmark = pytest.mark.slow

N_TRIALS = 8


def _pg_bin() -> Path | None:
    """The folder holding initdb and pg_ctl: on PATH, else Debian's /usr/lib/postgresql/<version>/bin (newest)."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3].split(".")[0]))
    return Path(versions[-1]).parent if versions else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres():
    """A private PostgreSQL server for this module: yields a function making a fresh database's SQLAlchemy URL."""
    bindir = _pg_bin()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found: install Debian's `postgresql` package "
                    "(.ci/run does: apt-get install -y postgresql)")
    try:
        import psycopg
    except ImportError:
        pytest.skip("the PostgreSQL driver psycopg is not installed: pip install -e '.[postgres]'")
    folder = Path(tempfile.mkdtemp(prefix="clbench-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root: run the server as the package's `postgres` user
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(folder)
            pytest.skip("running as root and there is no `postgres` user to run the server as (initdb refuses root)")
        if shutil.which("runuser") is None:
            shutil.rmtree(folder)
            pytest.skip("running as root without `runuser` (util-linux) to start the server as the `postgres` user")
        os.chown(folder, user.pw_uid, user.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = folder / "data", free_port()
    started = False
    try:
        subprocess.run(as_user + [str(bindir / "initdb"), "-D", str(data), "-U", "clbench", "--auth=trust", "-E", "UTF8",
                                  "--no-sync"], check=True, capture_output=True, text=True, timeout=120)
        options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c max_connections=60 -c shared_buffers=16MB"
        subprocess.run(as_user + [str(bindir / "pg_ctl"), "-D", str(data), "-l", str(folder / "server.log"), "-o", options,
                                  "-w", "-t", "60", "start"], check=True, capture_output=True, text=True, timeout=90)
        started = True
        base = f"clbench@127.0.0.1:{port}"
        made: list[str] = []

        def database(name: str) -> str:
            with psycopg.connect(f"postgresql://{base}/postgres", autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{name}"')
            made.append(name)
            return f"postgresql+psycopg://{base}/{name}"

        yield database
    except subprocess.CalledProcessError as exc:
        log = (folder / "server.log").read_text() if (folder / "server.log").exists() else ""
        pytest.fail(f"could not start PostgreSQL: {exc.cmd}: {exc.stderr}\n{log}")
    finally:
        if started:
            subprocess.run(as_user + [str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                           capture_output=True, timeout=60)
        shutil.rmtree(folder, ignore_errors=True)


def tune_config(output: Path, *, name: str = "shared", delay: float = 0.0, n_trials: int = N_TRIALS) -> dict:
    """ToyNCM tuned on digits 0-4 and evaluated on digits 5-9 (5 experiences each), random search."""
    return {
        "name": name, "output": str(output), "seeds": [0, 1],
        "tuning": {"name": "split_digits", "classes": [0, 1, 2, 3, 4], "n_experiences": 5},
        "evaluation": {"name": "split_digits", "classes": [5, 6, 7, 8, 9], "n_experiences": 5},
        "strategies": [{"name": "tune_toys:ToyNCM", "delay": delay}],
        "search": {"sampler": "random", "n_trials": n_trials, "seeds": [0], "protocol": "two-phase", "sampler_seed": 7},
    }


def start_tune(config: Path, storage: str, output: Path, log: Path, *extra: str) -> subprocess.Popen:
    """``clbench tune CONFIG --storage URL --output DIR`` in its own process group, output to ``log``."""
    with open(log, "w") as out:
        return subprocess.Popen([sys.executable, "-m", "clbench.protocols.cli", "tune", str(config), "--storage", storage,
                                 "--output", str(output), "--no-report", *extra],
                                stdout=out, stderr=subprocess.STDOUT, env=child_env(OMP_NUM_THREADS="1"),
                                start_new_session=True)


def finish(proc: subprocess.Popen, log: Path, timeout: float = 240) -> str:
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    text = log.read_text()
    assert proc.returncode == 0, text
    return text


def tuning_trials(url: str) -> list[optuna.trial.FrozenTrial]:
    names = [n for n in optuna.get_all_study_names(storage=url) if "/tuning/" in n]
    assert len(names) == 1, names
    return optuna.load_study(study_name=names[0], storage=url).get_trials()


def trial_lines(log: str) -> set[int]:
    """Numbers of the trials a process reports as finished (``[tuning] ...: trial N ...``)."""
    return {int(line.split(": trial ", 1)[1].split()[0]) for line in log.splitlines()
            if line.startswith("[tuning]") and ": trial " in line}


def key(params: dict) -> str:
    return json.dumps(params, sort_keys=True)


@pytest.fixture(scope="module")
def alone(tmp_path_factory, data_root) -> dict:
    """What one process alone chooses (its own SQLite file in the run folder, same sampler seed), as tune.json."""
    output = tmp_path_factory.mktemp("alone")
    data = dict(tune_config(output), data_root=str(data_root))
    run_tune(parse_tune_config(data, default_name="shared"), quiet=True)
    return json.loads((output / "shared" / "tune.json").read_text())


def phase2(summary: dict) -> dict:
    row = summary["strategies"][0]
    return {"chosen": row["chosen"], "phase1": row["phase1_score"], "phase2": row["phase2"]["per_seed"]}


def test_two_processes_share_the_budget_exactly_and_choose_what_one_process_chooses(postgres, alone, tmp_path, data_root):
    url = postgres("shared_budget")
    config = tmp_path / "tune.yaml"
    # 0.12 s per experience: a trial lasts about 0.6 s, so phase 1 lasts longer than the two processes' start-up
    # jitter and they interleave their trials
    config.write_text(yaml.safe_dump(dict(tune_config(tmp_path / "unused", delay=0.12), data_root=str(data_root))))
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    procs = [start_tune(config, url, tmp_path / name, log, "--heartbeat", "2") for name, log in zip("ab", logs)]
    texts = [finish(p, log) for p, log in zip(procs, logs)]

    trials = tuning_trials(url)
    done = [t for t in trials if t.state.name == "COMPLETE"]
    assert len(done) == N_TRIALS, [(t.number, t.state.name) for t in trials]
    ran = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED") or t.user_attrs.get("counts_against_budget")]
    assert len({key(t.params) for t in ran}) == len(ran)  # no parameter set run twice
    others = [t for t in trials if t not in ran]  # only trials told "budget reached" without running anything
    assert all(not t.params and "budget was reached" in t.user_attrs.get("error", "") for t in others)
    # each trial reported by exactly one process, and both processes ran trials
    mine = [trial_lines(t) for t in texts]
    assert mine[0] and mine[1] and not mine[0] & mine[1], mine
    assert mine[0] | mine[1] == {t.number for t in ran}

    # both folders: the same choice from the complete study, one phase-2 run each, identical results
    summaries = [json.loads((tmp_path / name / "shared" / "tune.json").read_text()) for name in "ab"]
    for name in "ab":
        assert len(list((tmp_path / name / "shared" / "cells").glob("*.json"))) == 2  # evaluation seeds 0 and 1
    assert phase2(summaries[0]) == phase2(summaries[1])
    assert len(summaries[0]["strategies"][0]["tuning"]["trials"]) == len(trials)

    # what one process alone runs and chooses: the same parameter sets, the same choice, the same phase 2
    assert phase2(alone) == phase2(summaries[0])
    assert sorted(key(t["params"]) for t in alone["strategies"][0]["tuning"]["trials"] if t["state"] == "COMPLETE") == \
        sorted(key(t.params) for t in done)


def test_kill_9_mid_trial_is_failed_by_the_heartbeat_and_retried_by_the_survivor(postgres, alone, tmp_path, data_root):
    url = postgres("killed")
    config = tmp_path / "tune.yaml"
    # 0.25 s per experience: a trial lasts about 1.3 s, long enough to be killed in its middle
    config.write_text(yaml.safe_dump(dict(tune_config(tmp_path / "unused", delay=0.25), data_root=str(data_root))))
    logs = [tmp_path / "victim.log", tmp_path / "survivor.log"]
    victim = start_tune(config, url, tmp_path / "victim", logs[0], "--heartbeat", "1")
    survivor = start_tune(config, url, tmp_path / "survivor", logs[1], "--heartbeat", "1")
    try:
        deadline = time.monotonic() + 180
        running_before: set[int] = set()
        while time.monotonic() < deadline:
            assert victim.poll() is None and survivor.poll() is None, logs[0].read_text() + logs[1].read_text()
            time.sleep(0.1)
            if trial_lines(logs[0].read_text()) and trial_lines(logs[1].read_text()):
                try:
                    trials = tuning_trials(url)
                except Exception:  # noqa: BLE001 - the study may be being created right now
                    continue
                running_before = {t.number for t in trials if t.state.name == "RUNNING"}
                if len(running_before) == 2:  # one trial of each process in flight
                    break
        assert len(running_before) == 2, "never saw both processes in the middle of a trial"
        time.sleep(0.3)
        os.killpg(victim.pid, signal.SIGKILL)
        killed_at = time.time()
        victim.wait(timeout=30)
    finally:
        if victim.poll() is None:
            os.killpg(victim.pid, signal.SIGKILL)
    text = finish(survivor, logs[1])
    assert not (tmp_path / "victim" / "shared" / "tune.json").exists()  # it really died before finishing

    trials = {t.number: t for t in tuning_trials(url)}
    stale = [t for t in trials.values() if t.state.name == "FAIL" and t.number in running_before
             and not t.user_attrs.get("counts_against_budget")]
    assert len(stale) == 1, [(t.number, t.state.name, t.user_attrs) for t in trials.values()]
    dead = stale[0]
    assert dead.datetime_complete.timestamp() >= killed_at  # failed after the kill (its heartbeat went stale)
    retries = [t for t in trials.values() if t.system_attrs.get("failed_trial") == dead.number]
    assert len(retries) == 1 and retries[0].state.name == "COMPLETE" and retries[0].params == dead.params
    print(f"trial {dead.number} killed; failed as stale {dead.datetime_complete.timestamp() - killed_at:.1f} s after the "
          f"kill, retried as trial {retries[0].number} (started {retries[0].datetime_start.timestamp() - killed_at:.1f} s, "
          f"complete {retries[0].datetime_complete.timestamp() - killed_at:.1f} s after the kill)")
    assert retries[0].number in trial_lines(text)  # run by the survivor
    assert sum(t.state.name == "COMPLETE" for t in trials.values()) == N_TRIALS

    # the killed command, rerun (here in-process): the study is complete, only its phase 2 runs
    data = yaml.safe_load(config.read_text())
    data["output"], data["search"] = str(tmp_path / "victim"), {**data["search"], "storage": url, "heartbeat": 1}
    lines: list[str] = []
    run_tune(parse_tune_config(data, default_name="shared"), quiet=False, echo=lines.append)
    assert not trial_lines("\n".join(lines)) and len(tuning_trials(url)) == len(trials)
    # both folders, and one process alone, choose the same values and get the same phase 2
    summaries = [json.loads((tmp_path / name / "shared" / "tune.json").read_text()) for name in ("victim", "survivor")]
    assert phase2(summaries[0]) == phase2(summaries[1]) == phase2(alone)
