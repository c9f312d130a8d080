"""Reading and validating a matrix configuration (YAML).

Every mistake found is reported at once, one line each, naming the fix; nothing runs before the
whole configuration is valid.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from clbench.benchmarks.registry import RESERVED_KEYS, benchmark_params, resolve_benchmark
from clbench.benchmarks.stream import SCENARIOS
from clbench.errors import UserError
from clbench.strategies.registry import resolve_strategy

TOP_KEYS = {
    "name": "run name (folder under output); default: the config file's stem",
    "output": "parent folder of run folders (default: runs)",
    "benchmarks": "list of {name: <benchmark>, <params>}",
    "strategies": "list of {name: <strategy>, <hyperparameters>}",
    "seeds": "list of integer seeds (default [0])",
    "device": "cpu | cuda | cuda:N (default cpu)",
    "data_root": "dataset folder (default $CLBENCH_DATA or ~/.cache/clbench/data)",
    "cache_dir": "feature/decoded-data cache folder (default $CLBENCH_CACHE or ~/.cache/clbench)",
    "workers": "parallel cells (default 1)",
    "executor": "local | ray",
    "timeout": "per-cell time limit in seconds",
    "address": "Ray cluster address for executor: ray (default: $RAY_ADDRESS, a `ray start` cluster here, or a new local one)",
}


@dataclass(frozen=True)
class CellSpec:
    """One cell of the matrix; picklable, hashed into a stable id for resume."""

    benchmark: dict[str, Any]
    strategy: dict[str, Any]
    seed: int
    device: str = "cpu"
    data_root: str | None = None
    cache_dir: str | None = None
    timeout: float | None = None

    @property
    def cell_id(self) -> str:
        key = json.dumps({"b": self.benchmark, "s": self.strategy, "seed": self.seed}, sort_keys=True, default=str)
        return hashlib.sha1(key.encode()).hexdigest()[:12]

    @property
    def benchmark_label(self) -> str:
        return self.benchmark.get("label") or self.benchmark["name"]

    @property
    def strategy_label(self) -> str:
        return self.strategy.get("label") or self.strategy["name"]


@dataclass
class RunConfig:
    name: str
    output: str
    benchmarks: list[dict[str, Any]]
    strategies: list[dict[str, Any]]
    seeds: list[int]
    device: str = "cpu"
    data_root: str | None = None
    cache_dir: str | None = None
    workers: int = 1
    executor: str = "local"
    timeout: float | None = None
    address: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # keys owned by other commands (e.g. tune)

    @property
    def run_dir(self) -> Path:
        return Path(self.output) / self.name

    def cells(self) -> list[CellSpec]:
        """All cells, ordered benchmark -> seed -> strategy so consecutive cells share a stream."""
        return [
            CellSpec(b, s, seed, self.device, self.data_root, self.cache_dir, self.timeout)
            for b in self.benchmarks for seed in self.seeds for s in self.strategies
        ]

    def to_dict(self) -> dict[str, Any]:
        d = {"name": self.name, "output": self.output, "benchmarks": self.benchmarks, "strategies": self.strategies,
             "seeds": self.seeds, "device": self.device, "workers": self.workers, "executor": self.executor}
        for k in ("data_root", "cache_dir", "timeout", "address"):
            if getattr(self, k) is not None:
                d[k] = getattr(self, k)
        d.update(self.extra)
        return d


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise UserError(f"config file {path} does not exist; fix: give the path of a YAML file (see configs/)")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise UserError(f"{path} is not valid YAML{where}: {getattr(exc, 'problem', exc)}; fix the syntax there") from None
    if not isinstance(data, dict):
        raise UserError(f"{path} must be a YAML mapping with keys such as benchmarks:, strategies:, seeds:")
    return data


def quickstart() -> dict[str, Any]:
    """The embedded quick-start matrix (scikit-learn digits, no download)."""
    text = resources.files("clbench.protocols").joinpath("quickstart.yaml").read_text()
    return yaml.safe_load(text)


def _labelled(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Give each entry a unique label: its name, or name(params) when a name repeats."""
    counts: dict[str, int] = {}
    for e in entries:
        counts[e["name"]] = counts.get(e["name"], 0) + 1
    out = []
    for e in entries:
        e = dict(e)
        if "label" not in e and counts[e["name"]] > 1:
            params = ",".join(f"{k}={v}" for k, v in e.items() if k != "name")
            e["label"] = f"{e['name']}({params})"
        out.append(e)
    labels = [e.get("label", e["name"]) for e in out]
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        raise UserError(f"entries {dup} appear twice with the same parameters; remove the duplicate or give each a distinct label:")
    return out


def _as_list_of_entries(value: Any, key: str, errors: list[str]) -> list[dict[str, Any]]:
    if value is None:
        errors.append(f"{key}: missing; give a list such as [{{name: ...}}]")
        return []
    if isinstance(value, (str, dict)):
        value = [value]
    if not isinstance(value, list):
        errors.append(f"{key}: must be a list of {{name: ...}} entries, got {type(value).__name__}")
        return []
    out = []
    for i, e in enumerate(value):
        if isinstance(e, str):
            e = {"name": e}
        if not isinstance(e, dict) or "name" not in e:
            errors.append(f"{key}[{i}]: each entry needs a name (e.g. {{name: ...}}), got {e!r}")
            continue
        out.append(dict(e))
    return out


def value_problems(entry: dict[str, Any], defaults: dict[str, Any]) -> list[str]:
    """Out-of-range values, judged against the parameter's default.

    A parameter whose default is a number must get a finite number, and a non-negative one when the
    default is non-negative (sizes, counts, epochs, rates); one whose default is a list of positive
    integers (layer widths) must get such a list.
    """
    out = []
    for k, v in entry.items():
        d = defaults.get(k)
        if k in ("name", "label") or d is None or isinstance(d, bool):
            continue
        if isinstance(d, (int, float)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v or v in (float("inf"), float("-inf")):
                out.append(f"{k} must be a finite number, got {v!r}")
            elif d >= 0 and v < 0:
                out.append(f"{k} must be >= 0, got {v!r}")
        elif isinstance(d, (list, tuple)) and d and all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in d):
            if not isinstance(v, (list, tuple)) or not all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in v):
                out.append(f"{k} must be a list of positive integers such as {list(d)}, got {v!r}")
    return out


def validate_benchmark(entry: dict[str, Any], errors: list[str], where: str) -> None:
    name = entry["name"]
    try:
        resolve_benchmark(name)
    except UserError as exc:
        errors.append(f"{where}: {exc}")
        return
    valid = benchmark_params(name)
    bad = sorted(set(entry) - set(valid) - set(RESERVED_KEYS))
    if bad:
        errors.append(f"{where}: benchmark {name!r} has no parameter(s) {bad}; valid: {', '.join(sorted(valid))}, plus {', '.join(RESERVED_KEYS[1:])}")
    for k in ("n_experiences", "base", "increment"):
        v = entry.get(k)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
            errors.append(f"{where}: {k} must be a positive integer, got {v!r}")
    errors.extend(f"{where}: {p}" for p in value_problems({k: v for k, v in entry.items() if k not in ("n_experiences", "base", "increment")}, valid))
    if "scenario" in entry and entry["scenario"] not in SCENARIOS:
        errors.append(f"{where}: unknown scenario {entry['scenario']!r}; valid: {', '.join(SCENARIOS)}")
    classes = entry.get("classes")
    n_classes = len(classes) if isinstance(classes, list) else getattr(resolve_benchmark(name), "n_classes", None)
    sizes = {k: entry.get(k, valid.get(k)) for k in ("n_experiences", "base", "increment")}
    if n_classes and all(v is None or (isinstance(v, int) and not isinstance(v, bool) and v >= 1) for v in sizes.values()):
        from clbench.benchmarks.split import class_increments

        try:  # the split's arithmetic (more experiences than classes, indivisible, base too big), before any data is read
            n_exp = sizes["n_experiences"] if sizes["base"] is None or sizes["increment"] is None else None
            class_increments(n_classes, n_exp, sizes["base"], sizes["increment"])
        except UserError as exc:
            errors.append(f"{where}: {exc}")
    if entry.get("rehearsal") is not None:
        from clbench.benchmarks.rehearsal import schedule_from_config

        try:
            if not isinstance(entry["rehearsal"], dict):
                raise UserError("rehearsal must be a mapping such as {schedule: power_law, budget: 0.5}")
            schedule_from_config(entry["rehearsal"])
        except UserError as exc:
            errors.append(f"{where}: {exc}")
    if entry.get("backbone") is not None:
        from clbench.benchmarks.backbones import check_backbone

        try:
            check_backbone(str(entry["backbone"]))
        except UserError as exc:
            errors.append(f"{where}: {exc}")
    if entry.get("blurry") is not None:
        from clbench.benchmarks.blurry import check_blurry

        try:
            check_blurry(entry["blurry"])
        except UserError as exc:
            errors.append(f"{where}: {exc}")


def validate_strategy(entry: dict[str, Any], errors: list[str], where: str) -> None:
    name = entry["name"]
    try:
        cls = resolve_strategy(name)
    except UserError as exc:
        errors.append(f"{where}: {exc}")
        return
    if name.startswith("avalanche."):
        try:  # the adapter validates Avalanche keyword arguments itself (unknown, managed, missing)
            cls.check_kwargs({k: v for k, v in entry.items() if k not in ("name", "label")})
        except UserError as exc:
            errors.append(f"{where}: {exc}")
        return
    valid = cls.hyperparameters()
    bad = sorted(set(entry) - set(valid) - {"name", "label"})
    if bad:
        errors.append(f"{where}: strategy {name!r} has no hyperparameter(s) {bad}; valid: {', '.join(sorted(valid)) or '(none)'}")
    errors.extend(f"{where}: {p}" for p in value_problems(entry, valid))


def parse_config(data: dict[str, Any], *, default_name: str = "run", extra_keys: dict[str, str] | None = None) -> RunConfig:
    """Validate a config mapping; raise one :class:`UserError` listing every mistake."""
    allowed = dict(TOP_KEYS, **(extra_keys or {}))
    errors: list[str] = []
    unknown = sorted(set(data) - set(allowed))
    for k in unknown:
        errors.append(f"unknown config key {k!r}; valid keys: {', '.join(sorted(allowed))}")
    benchmarks = _as_list_of_entries(data.get("benchmarks"), "benchmarks", errors)
    strategies = _as_list_of_entries(data.get("strategies"), "strategies", errors)
    for i, b in enumerate(benchmarks):
        validate_benchmark(b, errors, f"benchmarks[{i}] ({b['name']})")
    for i, s in enumerate(strategies):
        validate_strategy(s, errors, f"strategies[{i}] ({s['name']})")
    seeds = data.get("seeds", [0])
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        seeds = [seeds]
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds):
        errors.append(f"seeds: must be a non-empty list of non-negative integers, got {seeds!r}")
        seeds = [0]
    device = str(data.get("device", "cpu"))
    if not (device == "cpu" or device == "cuda" or device.startswith("cuda:") or device == "mps"):
        errors.append(f"device: {device!r} is not cpu, cuda, cuda:N or mps")
    workers = data.get("workers", 1)
    if not isinstance(workers, int) or workers < 1:
        errors.append(f"workers: must be a positive integer, got {workers!r}")
        workers = 1
    executor = data.get("executor", "local")
    if executor not in ("local", "ray"):
        errors.append(f"executor: {executor!r} is not 'local' or 'ray'")
    timeout = data.get("timeout")
    if timeout is not None and (not isinstance(timeout, (int, float)) or timeout <= 0):
        errors.append(f"timeout: must be a positive number of seconds, got {timeout!r}")
    name = str(data.get("name") or default_name)
    if not name or "/" in name or name in (".", ".."):
        errors.append(f"name: {name!r} is not a valid folder name")
    if not errors:
        try:
            benchmarks = _labelled(benchmarks)
            strategies = _labelled(strategies)
        except UserError as exc:
            errors.append(str(exc))
    if errors:
        raise UserError("invalid configuration:\n  - " + "\n  - ".join(errors))
    extra = {k: data[k] for k in (extra_keys or {}) if k in data}
    return RunConfig(name=name, output=str(data.get("output", "runs")), benchmarks=benchmarks, strategies=strategies,
                     seeds=list(dict.fromkeys(seeds)), device=device, data_root=data.get("data_root"),
                     cache_dir=data.get("cache_dir"), workers=workers, executor=executor, timeout=timeout,
                     address=None if data.get("address") is None else str(data["address"]), extra=extra)
