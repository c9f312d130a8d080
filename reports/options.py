"""What a report compares and how it names it: :class:`ReportOptions`, from the command line or a report config.

A report config is a small YAML file (``clbench report --config report.yaml``); every key is optional::

    runs: [runs/quickstart, runs/plug_vs_base]   # run folders, relative to this file (RUN arguments add to them)
    strategies: [joint, replay, finetune]        # selection and order (labels as the report shows them)
    benchmarks: [split_digits]                   # selection and order
    rename: {finetune: Fine-tune, split_digits: "Split digits"}   # strategies and benchmarks
    merge: true        # pool the seeds of an identical strategy and benchmark entry from several run folders
    spread: std        # what ± shows in tables and whiskers: std or ci (see clbench.stats.SPREADS)
    band: auto         # band of the seen-accuracy curves: auto, std, ci, minmax or none
    main_metrics: [acc, aia]   # columns of the main table per benchmark (default: ACC, AIA; blurry: A_last first)
    formats: [html, md, png, pdf]
    out: paper/report  # output folder, relative to this file

Command-line options override the file's values (``--strategies a,b --rename old=new ...``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from clbench.constraints import AnyOf, Boolean, Check, ListOf, NoneValue, Options, String, problems
from clbench.errors import UserError
from clbench.files import load_yaml_file
from clbench.stats import SPREADS

FORMATS = ("html", "md", "png", "pdf")
#: bands of the seen-accuracy curves; ``auto`` is ``ci`` when every curve has at least AUTO_CI_SEEDS seeds, else ``std``
BANDS = ("auto", "std", "ci", "minmax", "none")
AUTO_CI_SEEDS = 5
#: metrics the main table can show (record metric keys; accuracies in %)
MAIN_METRICS = ("acc", "aia", "a_last", "a_auc", "forgetting", "bwt", "fwt")


def _rename_problem(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, Mapping) or not all(isinstance(k, str) and isinstance(v, str) and v.strip()
                                                 for k, v in value.items()):
        return f"must be a mapping of old label to new label (strings), got {value!r}"
    return None


_NAMES = AnyOf(NoneValue(), ListOf(String(), min_len=1, unique=True))
#: the declared constraints of every report-config key
CONSTRAINTS = {
    "runs": AnyOf(NoneValue(), ListOf(String(), min_len=1)),
    "strategies": _NAMES,
    "benchmarks": _NAMES,
    "rename": Check(_rename_problem, "a mapping of old label to new label"),
    "merge": Boolean(),
    "spread": Options(*SPREADS),
    "band": Options(*BANDS),
    "main_metrics": AnyOf(NoneValue(), ListOf(Options(*MAIN_METRICS), min_len=1, unique=True)),
    "formats": AnyOf(NoneValue(), ListOf(Options(*FORMATS), min_len=1, unique=True)),
    "out": AnyOf(NoneValue(), String()),
}


@dataclass(frozen=True)
class ReportOptions:
    """Selection, naming and presentation of a report (every field has a declared constraint in :data:`CONSTRAINTS`).

    ``strategies``/``benchmarks``: labels to keep, in this order (``None``: all, in the order first met).
    ``rename``: old label -> new label, for strategies and benchmarks. ``merge``: cells of the same strategy
    entry on the same benchmark entry (the ``spec`` of their records, labels aside) from several run folders
    are one series with their seeds pooled; ``False`` keeps every run folder's cells apart.
    ``spread``: what ± shows (:data:`clbench.stats.SPREADS`); ``band``: the curves' band (:data:`BANDS`).
    """

    runs: tuple[str, ...] = ()
    strategies: tuple[str, ...] | None = None
    benchmarks: tuple[str, ...] | None = None
    rename: Mapping[str, str] = field(default_factory=dict)
    merge: bool = True
    spread: str = "std"
    band: str = "auto"
    main_metrics: tuple[str, ...] | None = None
    formats: tuple[str, ...] = FORMATS
    out: str | None = None

    def __post_init__(self) -> None:
        values = {"runs": list(self.runs) or None, "strategies": _list(self.strategies), "benchmarks": _list(self.benchmarks),
                  "rename": dict(self.rename), "merge": self.merge, "spread": self.spread, "band": self.band,
                  "main_metrics": _list(self.main_metrics), "formats": list(self.formats), "out": self.out}
        bad = problems(values, CONSTRAINTS)
        if bad:
            raise UserError("bad report option(s): " + "; ".join(bad) + "; fix: see `clbench report --help`")

    def updated(self, **changes: Any) -> "ReportOptions":
        """A copy with the non-``None`` ``changes`` applied (command-line values over a config's)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


def _list(v: Sequence[str] | None) -> list[str] | None:
    return None if v is None else list(v)


def split_names(text: str | Sequence[str] | None) -> tuple[str, ...] | None:
    """``"a,b"`` or ``["a,b", "c"]`` -> ``("a", "b", "c")``; ``None`` stays ``None``."""
    if text is None:
        return None
    items = [text] if isinstance(text, str) else list(text)
    out = tuple(t.strip() for item in items for t in str(item).split(",") if t.strip())
    if not out:
        raise UserError("an empty list of names; fix: give comma-separated labels, e.g. --strategies finetune,replay")
    return out


def parse_formats(text: str | Sequence[str] | None) -> tuple[str, ...]:
    """``"html,md,png,pdf"`` (or a list) -> a validated tuple; one :class:`UserError` naming the valid choices."""
    if text is None:
        return FORMATS
    items = [t.strip().lower() for t in (text.split(",") if isinstance(text, str) else text) for t in str(t).split(",")]
    items = [t for t in items if t]
    bad = [t for t in items if t not in FORMATS]
    if bad or not items:
        raise UserError(f"unknown report format(s) {bad or items}; fix: --format with a comma-separated subset of {','.join(FORMATS)}")
    return tuple(dict.fromkeys(items))


def parse_rename(items: Sequence[str] | None) -> dict[str, str] | None:
    """``["old=new", ...]`` -> ``{"old": "new"}``; a bad item is one :class:`UserError`.

    The item is split at its last ``=``: generated labels may hold ``=`` (``split_fmnist(n_experiences=5,...)``),
    new names may not.
    """
    if not items:
        return None
    out: dict[str, str] = {}
    for item in items:
        old, sep, new = item.rpartition("=")
        if not sep or not old.strip() or not new.strip():
            raise UserError(f"--rename {item!r}: write OLD=NEW, e.g. --rename finetune=Fine-tune")
        out[old.strip()] = new.strip()
    return out


def load_report_config(path: str | Path) -> ReportOptions:
    """Read a report config (see the module docstring); relative ``runs`` and ``out`` are taken from its folder."""
    path = Path(path)
    try:
        data = load_yaml_file(path)
    except FileNotFoundError:
        raise UserError(f"report config {path} does not exist; fix: give a YAML file, e.g. --config report.yaml") from None
    except OSError as exc:
        raise UserError(f"cannot read report config {path}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - yaml.YAMLError: bad syntax
        raise UserError(f"report config {path} is not valid YAML: {' '.join(str(exc).split())}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"report config {path} must be a mapping of keys ({', '.join(CONSTRAINTS)}), got {type(data).__name__}")
    unknown = sorted(set(data) - set(CONSTRAINTS))
    if unknown:
        raise UserError(f"report config {path}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(CONSTRAINTS)}")
    bad = problems(data, CONSTRAINTS)
    if bad:
        raise UserError(f"report config {path}: " + "; ".join(bad))
    base = path.parent

    def rel(p: str) -> str:
        q = Path(p).expanduser()
        return str(q if q.is_absolute() else base / q)

    kw: dict[str, Any] = {}
    if data.get("runs"):
        kw["runs"] = tuple(rel(p) for p in data["runs"])
    for key in ("strategies", "benchmarks", "main_metrics"):
        if data.get(key) is not None:
            kw[key] = tuple(data[key])
    if data.get("formats") is not None:
        kw["formats"] = tuple(data["formats"])
    if data.get("rename"):
        kw["rename"] = dict(data["rename"])
    if data.get("out"):
        kw["out"] = rel(data["out"])
    for key in ("merge", "spread", "band"):
        if key in data:
            kw[key] = data[key]
    return ReportOptions(**kw)


def band_description(band: str) -> str:
    """What a band or whisker of ``band`` shows, in words."""
    if band in SPREADS:
        return SPREADS[band].replace("mean ± ", "")
    return {"minmax": "min–max over seeds", "none": "no band"}[band]


#: the few words a figure's title uses for a band or whisker (the caption gives :func:`band_description`)
SHORT_BANDS = {"std": "±1 s.d. over seeds", "ci": "95% CI over seeds", "minmax": "min–max over seeds", "none": "none"}
