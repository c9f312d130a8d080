"""Reading and validating a matrix configuration (YAML).

The config layer owns no rule about a parameter's values: benchmarks check their own parameters
(:func:`clbench.benchmarks.registry.entry_problems`), strategies declare theirs
(:meth:`clbench.strategies.base.Strategy.parameter_problems`), and the top-level keys are declared here
(:data:`TOP_CONSTRAINTS`). Every message is collected and reported at once, one line each, before any data
is read; nothing runs before the whole configuration is valid.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from clbench.benchmarks.registry import entry_problems
from clbench.constraints import AnyOf, Check, Interval, ListOf, NoneValue, Options, String, problems
from clbench.errors import UserError
from clbench.files import load_yaml_text
from clbench.results import cell_id
from clbench.strategies.registry import resolve_strategy

MAX_SEED = 2**31 - 1


def _device_problem(v: Any) -> str | None:
    ok = isinstance(v, str) and (v in ("cpu", "cuda", "mps") or (v.startswith("cuda:") and v[5:].isdigit()))
    return None if ok else f"must be cpu, cuda, cuda:N or mps, got {v!r}"


def _name_problem(v: Any) -> str | None:
    ok = isinstance(v, str) and v and "/" not in v and v not in (".", "..") and "\0" not in v
    return None if ok else f"must be a folder name (no '/'), got {v!r}"


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
    "eval_period": "evaluate online strategies every N training samples (anytime accuracy A_auc); default: experience ends only",
}

TOP_CONSTRAINTS = {
    "name": Check(_name_problem, "a folder name"),
    "output": String(),
    "seeds": ListOf(Interval(int, 0, MAX_SEED), min_len=1),
    "device": Check(_device_problem, "cpu, cuda, cuda:N or mps"),
    "data_root": AnyOf(NoneValue(), String()),
    "cache_dir": AnyOf(NoneValue(), String()),
    "workers": Interval(int, 1),
    "executor": Options("local", "ray"),
    "timeout": AnyOf(NoneValue(), Interval(float, 0, None, "neither")),
    "address": AnyOf(NoneValue(), String()),
    "eval_period": AnyOf(NoneValue(), Interval(int, 1)),
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
    eval_period: int | None = None
    prune: Any = None  # a PruneRule when the cell is a tuning trial's (not part of the cell id)
    tag: str = ""  # the caller's name for this run of the cell (not part of the cell id)

    @property
    def cell_id(self) -> str:
        return cell_id(self.benchmark, self.strategy, self.seed)

    @property
    def benchmark_label(self) -> str:
        return self.benchmark.get("label") or self.benchmark["name"]

    @property
    def strategy_label(self) -> str:
        return self.strategy.get("label") or self.strategy["name"]

    @property
    def hyperparameters(self) -> dict[str, Any]:
        return {k: v for k, v in self.strategy.items() if k not in ("name", "label")}


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
    eval_period: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # keys owned by other commands (e.g. tune)

    @property
    def run_dir(self) -> Path:
        return Path(self.output) / self.name

    def cell(self, benchmark: dict[str, Any], strategy: dict[str, Any], seed: int) -> CellSpec:
        return CellSpec(benchmark, strategy, seed, self.device, self.data_root, self.cache_dir, self.timeout, self.eval_period)

    def cells(self) -> list[CellSpec]:
        """All cells, ordered benchmark -> seed -> strategy so consecutive cells share a stream."""
        return [self.cell(b, s, seed) for b in self.benchmarks for seed in self.seeds for s in self.strategies]

    def to_dict(self) -> dict[str, Any]:
        d = {"name": self.name, "output": self.output, "benchmarks": self.benchmarks, "strategies": self.strategies,
             "seeds": self.seeds, "device": self.device, "workers": self.workers, "executor": self.executor}
        for k in ("data_root", "cache_dir", "timeout", "address", "eval_period"):
            if getattr(self, k) is not None:
                d[k] = getattr(self, k)
        d.update(self.extra)
        return d


def load_yaml(path: str | Path) -> dict[str, Any]:
    """A config file as a mapping; unreadable files and bad syntax are one UserError naming the place."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"config file {path} does not exist; fix: give the path of a YAML file (see configs/)")
    try:
        data = load_yaml_text(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read config file {path}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise UserError(f"{path} is not valid YAML{where}: {getattr(exc, 'problem', exc)}; fix the syntax there") from None
    if not isinstance(data, dict):
        raise UserError(f"{path} must be a YAML mapping with keys such as benchmarks:, strategies:, seeds:")
    return data


def quickstart() -> dict[str, Any]:
    """The embedded quick-start matrix (scikit-learn digits, no download)."""
    return load_yaml_text(resources.files("clbench.protocols").joinpath("quickstart.yaml").read_text())


def _labelled(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Give each entry a unique label: its name, or name(params) when a name repeats."""
    counts: dict[str, int] = {}
    for e in entries:
        if "label" not in e:
            counts[e["name"]] = counts.get(e["name"], 0) + 1
    out = []
    for e in entries:
        e = dict(e)
        if "label" not in e and counts.get(e["name"], 0) > 1:
            params = ",".join(f"{k}={v}" for k, v in e.items() if k != "name")
            e["label"] = f"{e['name']}({params})"
        out.append(e)
    labels = [str(e.get("label", e["name"])) for e in out]
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        raise UserError(f"entries {dup} appear twice with the same parameters; remove the duplicate or give each a distinct label:")
    return out


def as_entries(value: Any, key: str, errors: list[str]) -> list[dict[str, Any]]:
    """A list of ``{name: ...}`` entries (a bare name or mapping is a list of one); mistakes appended to ``errors``."""
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
        if not isinstance(e, dict) or not isinstance(e.get("name"), str) or not e["name"]:
            errors.append(f"{key}[{i}]: each entry needs a name (e.g. {{name: ...}}), got {e!r}")
            continue
        if "label" in e and (not isinstance(e["label"], str) or not e["label"]):
            errors.append(f"{key}[{i}]: label must be a non-empty string, got {e['label']!r}")
            continue
        out.append(dict(e))
    return out


def benchmark_errors(entry: dict[str, Any], where: str) -> list[str]:
    """The benchmark's own rules, then the backbone's spec."""
    out = [f"{where}: {p}" for p in entry_problems(entry)]
    if entry.get("backbone") is not None:
        from clbench.benchmarks.backbones import check_backbone

        try:
            check_backbone(entry["backbone"])
        except UserError as exc:
            out.append(f"{where}: {exc}")
    return out


def _backbone_as_spec(entry: dict[str, Any]) -> dict[str, Any]:
    """The entry with its backbone (a string or a mapping {name: ..., checkpoint: ...}) as the canonical spec string."""
    if entry.get("backbone") is None:
        return entry
    from clbench.benchmarks.backbones import backbone_spec

    return {**entry, "backbone": backbone_spec(entry["backbone"])}


def strategy_errors(entry: dict[str, Any], where: str, causes: list[BaseException] | None = None) -> list[str]:
    try:
        cls = resolve_strategy(entry["name"])
    except UserError as exc:
        if causes is not None and exc.__cause__ is not None:
            causes.append(exc.__cause__)
        return [f"{where}: {exc}"]
    params = {k: v for k, v in entry.items() if k not in ("name", "label")}
    return [f"{where}: {p}" for p in cls.parameter_problems(params)]


def parse_config(data: dict[str, Any], *, default_name: str = "run", extra_keys: dict[str, str] | None = None) -> RunConfig:
    """Validate a config mapping; raise one :class:`UserError` listing every mistake.

    The error's ``causes`` hold the exceptions behind the messages (e.g. a plug-in failing at import), which
    ``clbench --debug`` prints with their tracebacks.
    """
    causes: list[BaseException] = []
    errors = config_errors(data, extra_keys, causes)
    if errors:
        err = UserError("invalid configuration:\n  - " + "\n  - ".join(errors))
        err.causes = causes  # type: ignore[attr-defined]
        raise err
    return _build(data, default_name, extra_keys)


def config_errors(data: dict[str, Any], extra_keys: dict[str, str] | None = None,
                  causes: list[BaseException] | None = None) -> list[str]:
    """Every mistake of a config mapping, one message each (empty when valid); underlying exceptions go to ``causes``."""
    allowed = dict(TOP_KEYS, **(extra_keys or {}))
    errors = [f"unknown config key {k!r}; valid keys: {', '.join(sorted(allowed))}" for k in sorted(set(data) - set(allowed))]
    benchmarks = as_entries(data.get("benchmarks"), "benchmarks", errors)
    strategies = as_entries(data.get("strategies"), "strategies", errors)
    for i, b in enumerate(benchmarks):
        errors += benchmark_errors(b, f"benchmarks[{i}] ({b['name']})")
    for i, s in enumerate(strategies):
        errors += strategy_errors(s, f"strategies[{i}] ({s['name']})", causes)
    top = {k: v for k, v in data.items() if k in TOP_CONSTRAINTS}
    if isinstance(top.get("seeds"), int) and not isinstance(top["seeds"], bool):
        top["seeds"] = [top["seeds"]]
    errors += problems(top, TOP_CONSTRAINTS)
    if not errors:
        try:
            _labelled(benchmarks)
            _labelled(strategies)
        except UserError as exc:
            errors.append(str(exc))
    return errors


def _build(data: dict[str, Any], default_name: str, extra_keys: dict[str, str] | None) -> RunConfig:
    seeds = data.get("seeds", [0])
    seeds = [seeds] if isinstance(seeds, int) else list(seeds)
    extra = {k: data[k] for k in (extra_keys or {}) if k in data}
    errors: list[str] = []
    return RunConfig(
        name=str(data.get("name") or default_name), output=str(data.get("output", "runs")),
        benchmarks=_labelled([_backbone_as_spec(e) for e in as_entries(data.get("benchmarks"), "benchmarks", errors)]),
        strategies=_labelled(as_entries(data.get("strategies"), "strategies", errors)),
        seeds=list(dict.fromkeys(seeds)), device=str(data.get("device", "cpu")), data_root=data.get("data_root"),
        cache_dir=data.get("cache_dir"), workers=int(data.get("workers", 1)), executor=str(data.get("executor", "local")),
        timeout=None if data.get("timeout") is None else float(data["timeout"]),
        address=None if data.get("address") is None else str(data["address"]),
        eval_period=data.get("eval_period"), extra=extra)
