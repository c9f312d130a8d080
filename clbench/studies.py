"""Published results: ``results/<study>/`` holds the small, committed output of a run or a bench script.

A study folder holds the tables (CSV/Markdown) and figures a run produced, and ``study.yaml``::

    name: frozen_cifar10
    command: [clbench run configs/split_cifar10_frozen.yaml, clbench report runs/split_cifar10_frozen --publish ...]
    configs: {configs/split_cifar10_frozen.yaml: <sha256 of the file when the run was made>}
    host: {cpu: ..., cores: 2, load_average: [...], device: ..., versions: {...}}
    generated: 2026-12-01T04:00:00+00:00
    files: [main_table.md, main_table.csv, ...]

Two writers: ``clbench report RUN... --publish results/<study>`` (the report's tables and PNG figures, the
``clbench run`` commands each run folder recorded in its ``run.yaml`` by :func:`record_invocation`, the
host facts its cells recorded) and :class:`Publication` / :func:`publish_output` (a bench script's printed
output, its tables and figures, host facts measured at its start).

The documentation includes these files at build time; prose may interpret the numbers but never retypes
them. :func:`stale_studies` names every study whose config no longer exists or whose content changed since
the numbers were measured (a test runs it).
"""

from __future__ import annotations

import hashlib
import io
import os
import shlex
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .errors import UserError
from .files import atomic_write_bytes, atomic_write_yaml, ensure_folder, load_yaml_file

STUDY_FILE = "study.yaml"
#: the file of a run folder that records the commands which wrote it (see :func:`record_invocation`)
RUN_FILE = "run.yaml"


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def repo_root_of(path: str | Path) -> Path:
    """The nearest folder at or above ``path`` holding ``.git`` (the repository), else the working directory."""
    p = Path(path).resolve()
    for d in (p, *p.parents):
        if (d / ".git").exists():
            return d
    return Path.cwd().resolve()


def relative_to_root(path: str | Path, root: str | Path) -> str:
    """``path`` relative to ``root`` when it lies below it, else its absolute path."""
    p, r = Path(path).resolve(), Path(root).resolve()
    return str(p.relative_to(r)) if p.is_relative_to(r) else str(p)


@dataclass
class Study:
    """The record of one published study (see the module docstring)."""

    name: str
    command: list[str]
    configs: dict[str, str] = field(default_factory=dict)
    host: dict[str, Any] = field(default_factory=dict)
    generated: str = ""
    files: list[str] = field(default_factory=list)
    notes: str = ""


def write_study(folder: str | Path, *, command: Sequence[str], configs: Sequence[str | Path] | Mapping[str, str] = (),
                host: Mapping[str, Any] | None = None, files: Mapping[str, bytes] | None = None,
                repo_root: str | Path = ".", notes: str = "") -> Path:
    """Write the files of a study and its ``study.yaml``; return the path of ``study.yaml``.

    ``configs``: config files (hashed now, named relative to ``repo_root``), or a mapping ``{path: sha256}``
    of hashes recorded when the numbers were measured (``path`` relative to ``repo_root`` or absolute).
    Files that an earlier ``study.yaml`` of this folder listed and ``files`` no longer has are deleted (the
    folder holds one study, not the leftovers of several). A folder that cannot be written is one
    :class:`~clbench.errors.UserError`.
    """
    folder, root = Path(folder), Path(repo_root).resolve()
    ensure_folder(folder)
    old: list[str] = []
    if (folder / STUDY_FILE).is_file():
        try:
            old = list(read_study(folder).files)
        except (OSError, ValueError, TypeError):
            old = []
    for name, data in (files or {}).items():
        atomic_write_bytes(folder / name, data)
    for name in old:
        if files is not None and name not in files and (folder / name).is_file():
            (folder / name).unlink()
    if isinstance(configs, Mapping):
        rel = {relative_to_root(root / c, root): str(d) for c, d in configs.items()}
    else:
        rel = {relative_to_root(c, root): file_sha256(c) for c in configs}
    names = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and p.name != STUDY_FILE
                   and not p.name.startswith("."))
    study = Study(folder.name, list(command), rel, dict(host or {}), datetime.now(timezone.utc).isoformat(timespec="seconds"),
                  names, notes)
    atomic_write_yaml(folder / STUDY_FILE, asdict(study))
    return folder / STUDY_FILE


def read_study(folder: str | Path) -> Study:
    data = load_yaml_file(Path(folder) / STUDY_FILE)
    return Study(**{k: v for k, v in data.items() if k in Study.__dataclass_fields__})


def find_studies(results: str | Path) -> list[Path]:
    """The study folders under ``results`` (each holding a ``study.yaml``), by name."""
    return sorted(p.parent for p in Path(results).glob(f"*/{STUDY_FILE}"))


def study_problems(folder: str | Path, repo_root: str | Path = ".") -> list[str]:
    """Why one published study no longer matches the code (empty when it is current)."""
    folder, root = Path(folder), Path(repo_root)
    study = read_study(folder)
    out = []
    for rel, digest in study.configs.items():
        path = root / rel
        if not path.exists():
            out.append(f"{folder.name}: names {rel}, which no longer exists")
        elif file_sha256(path) != digest:
            out.append(f"{folder.name}: {rel} changed since the numbers were measured (rerun: {'; '.join(study.command)})")
    for name in study.files:
        if not (folder / name).exists():
            out.append(f"{folder.name}: lists {name}, which is missing")
    return out


def stale_studies(results: str | Path, repo_root: str | Path = ".") -> list[str]:
    """Why each published study no longer matches the code: a missing config, a changed config, a missing file."""
    return [p for folder in find_studies(results) for p in study_problems(folder, repo_root)]


# ------------------------------------------------------------------------------------ run folders

def record_invocation(run_dir: str | Path, argv: Sequence[str], config: str | Path | None, program: str = "clbench") -> None:
    """Append the command that wrote ``run_dir`` to its ``run.yaml`` (``clbench run``/``tune`` call it).

    Each entry: ``command`` (``program`` + the arguments, shell-quoted, as typed), ``cwd``, ``config`` (the
    source config as given), ``config_path`` (resolved) and ``config_sha256`` (its content when the command
    ran; absent for the embedded quick start), ``time`` (UTC). The same command on the same config content
    (a resume) is one entry, moved to the end. Nothing is written when the folder does not exist.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return
    entry: dict[str, Any] = {"command": " ".join([program, *map(shlex.quote, argv)]), "cwd": os.getcwd(),
                             "config": None if config is None else str(config)}
    if config is not None and Path(config).is_file():
        entry["config_path"] = str(Path(config).resolve())
        entry["config_sha256"] = file_sha256(config)
    entry["time"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    same = ("command", "cwd", "config_sha256")
    old = [e for e in read_invocations(run_dir) if any(e.get(k) != entry.get(k) for k in same)]
    atomic_write_yaml(run_dir / RUN_FILE, {"invocations": old + [entry]})


def read_invocations(run_dir: str | Path) -> list[dict[str, Any]]:
    """The entries of ``run_dir/run.yaml`` (oldest first); empty when the folder has none."""
    path = Path(run_dir) / RUN_FILE
    if not path.is_file():
        return []
    try:
        data = load_yaml_file(path)
    except (OSError, ValueError) as exc:
        raise UserError(f"{path} cannot be read ({exc}); fix: rerun the `clbench run` command that made {run_dir} "
                        f"(finished cells are kept), which rewrites it") from None
    items = data.get("invocations") if isinstance(data, dict) else None
    return [e for e in items if isinstance(e, dict)] if isinstance(items, list) else []


def hosts_summary(hosts: Sequence[Mapping[str, Any]], versions: Sequence[Mapping[str, str]] = ()) -> dict[str, Any]:
    """The host facts of many cells in one mapping.

    ``cpu``, ``cores``, ``device``: the single value, or the sorted list when cells differ; ``load_average``
    at the start of the cells as ``{min: [1, 5, 15 min], max: [...]}`` (element-wise over cells);
    ``versions``: one value per library, or the sorted list of values seen; ``cells``: how many cells
    recorded host facts (records written before host facts were recorded have none).
    """
    hosts = [h for h in hosts if isinstance(h, Mapping) and h]
    out: dict[str, Any] = {}
    for key in ("cpu", "cores", "device", "platform"):
        values = sorted({h[key] for h in hosts if h.get(key) not in (None, "")}, key=str)
        if values:
            out[key] = values[0] if len(values) == 1 else values
    loads = [list(h["load_average"]) for h in hosts if isinstance(h.get("load_average"), (list, tuple)) and h["load_average"]]
    if loads:
        n = min(len(x) for x in loads)
        out["load_average"] = {"min": [min(x[i] for x in loads) for i in range(n)],
                               "max": [max(x[i] for x in loads) for i in range(n)]}
    seen: dict[str, set[str]] = {}
    for v in [*(h.get("versions") or {} for h in hosts), *versions]:
        for k, x in (v or {}).items():
            seen.setdefault(str(k), set()).add(str(x))
    if seen:
        out["versions"] = {k: (sorted(v)[0] if len(v) == 1 else sorted(v)) for k, v in sorted(seen.items())}
    out["cells"] = len(hosts)
    return out


def host_line(host: Mapping[str, Any]) -> str:
    """One line of host facts for people: CPU, cores, device, load average at start, main library versions."""
    def one(v: Any) -> str:
        return " / ".join(map(str, v)) if isinstance(v, list) else str(v)

    parts = []
    if host.get("cpu"):
        parts.append(one(host["cpu"]))
    if host.get("cores") not in (None, ""):
        parts.append(f"{one(host['cores'])} cores")
    if host.get("device") and not str(one(host["device"])).startswith("cpu:"):
        parts.append(one(host["device"]))
    load = host.get("load_average")
    if isinstance(load, Mapping) and load.get("min"):
        lo, hi = load["min"][0], load.get("max", load["min"])[0]
        parts.append(f"load average at start {lo:.2f}" + (f"–{hi:.2f}" if hi != lo else ""))
    elif isinstance(load, (list, tuple)) and load:
        parts.append(f"load average at start {load[0]:.2f}")
    v = host.get("versions") or {}
    libs = [f"{k} {one(v[k])}" for k in ("clbench", "python", "torch") if k in v]
    if libs:
        parts.append(", ".join(libs))
    return "; ".join(parts) or "not recorded"


# ------------------------------------------------------------------------------------ bench scripts

def markdown_table(df: Any, floatfmt: str = ".4g") -> str:
    """A pandas DataFrame as a Markdown table (its index left out unless named); ``|`` escaped."""
    frame = df.reset_index() if any(n is not None for n in df.index.names) else df

    def cell(v: Any) -> str:
        if isinstance(v, float):
            s = "" if v != v else format(v, floatfmt)
        else:
            s = str(v)
        return s.replace("|", "\\|").replace("\n", " ")

    cols = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(c.replace("|", "\\|") for c in cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def _figure_png(fig: Any) -> bytes:
    if isinstance(fig, (bytes, bytearray)):
        return bytes(fig)
    if isinstance(fig, (str, Path)):
        return Path(fig).read_bytes()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, metadata={"Software": None}, bbox_inches="tight")
    return buf.getvalue()


def publish_output(folder: str | Path, *, command: str | Sequence[str], configs: Sequence[str | Path] = (),
                   text: str = "", tables: Mapping[str, Any] | None = None, figures: Mapping[str, Any] | None = None,
                   host: Mapping[str, Any] | None = None, repo_root: str | Path | None = None, notes: str = "") -> Path:
    """Publish a bench script's output as the study ``folder``; return the path of its ``study.yaml``.

    Writes ``output.md`` (``text``, what the script printed, verbatim in a code block; then each table of
    ``tables`` as a Markdown table and each figure as an image link), ``<table>.csv`` per table,
    ``<figure>.png`` per figure (PNG bytes, a PNG file or a Matplotlib figure, rendered at 120 dpi), and
    ``study.yaml`` (:func:`write_study`) with ``command``, the ``configs`` hashed now and ``host`` (by default
    :func:`clbench.host.host_facts` now; :class:`Publication` passes the facts measured at the script's start).
    """
    from .host import host_facts

    folder = Path(folder)
    root = Path(repo_root) if repo_root is not None else repo_root_of(folder.parent if not folder.exists() else folder)
    commands = [command] if isinstance(command, str) else list(command)
    md = [f"# {folder.name}", ""]
    if text.strip():
        fence = "```"
        while fence in text:
            fence += "`"
        md += [fence + "text", text.rstrip("\n"), fence, ""]
    files: dict[str, bytes] = {}
    for name, df in (tables or {}).items():
        md += [f"## {name}", "", markdown_table(df), ""]
        files[f"{name}.csv"] = df.to_csv(index=False).encode()
    for name, fig in (figures or {}).items():
        files[f"{name}.png"] = _figure_png(fig)
        md += [f"![{name}]({name}.png)", ""]
    files["output.md"] = ("\n".join(md).rstrip("\n") + "\n").encode()
    return write_study(folder, command=commands, configs=configs, host=dict(host) if host is not None else host_facts(),
                       files=files, repo_root=root, notes=notes)


class _Tee(io.TextIOBase):
    """Writes go to the original stream and into a buffer."""

    def __init__(self, stream: Any) -> None:
        self.stream, self.buffer_text = stream, io.StringIO()

    def write(self, s: str) -> int:
        self.buffer_text.write(s)
        return self.stream.write(s)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return self.stream.isatty()

    def fileno(self) -> int:
        return self.stream.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.stream, "encoding", "utf-8")

    def __getattr__(self, name: str) -> Any:  # e.g. reconfigure(line_buffering=True)
        return getattr(self.stream, name)


class Publication:
    """``--publish DIR`` of a bench script: host facts at the start, what the script prints, published at the end.

    ::

        args = ap.parse_args()
        pub = Publication.begin(args.publish)        # inert when args.publish is None
        ...                                          # the script as before (its prints are also kept)
        pub.end(configs=[args.config], tables={"times": df})

    :meth:`begin` measures :func:`clbench.host.host_facts` (load average at the start) and tees ``sys.stdout``
    (what the script prints through Python; child processes' own output is not captured). :meth:`end`
    restores ``sys.stdout`` and calls :func:`publish_output` with the command line as typed
    (``python <script> <arguments>``), the printed text, and ``host`` = the facts at the start plus the load
    average at the end (``load_average_end``) and the library versions loaded by then.
    """

    def __init__(self, folder: str | Path | None, argv: Sequence[str] | None = None, device: str = "cpu") -> None:
        from .host import host_facts

        self.folder = None if folder is None else Path(folder)
        argv = list(sys.argv if argv is None else argv)
        self.command = " ".join(["python", *map(shlex.quote, [self._script(argv[0]), *argv[1:]])]) if argv else "python"
        self.host: dict[str, Any] = {}
        self.tee: _Tee | None = None
        self.t0 = time.time()
        if self.folder is not None:
            ensure_folder(self.folder)  # a folder that cannot be written fails now, not after the measurement
            self.host = host_facts(device)
            self.tee = _Tee(sys.stdout)
            sys.stdout = self.tee

    @staticmethod
    def _script(path: str) -> str:
        p = Path(path)
        if not p.is_file():
            return path
        return relative_to_root(p, repo_root_of(p))

    @classmethod
    def begin(cls, folder: str | Path | None, argv: Sequence[str] | None = None, device: str = "cpu") -> "Publication":
        return cls(folder, argv, device)

    @property
    def text(self) -> str:
        return "" if self.tee is None else self.tee.buffer_text.getvalue()

    def end(self, *, configs: Sequence[str | Path] = (), tables: Mapping[str, Any] | None = None,
            figures: Mapping[str, Any] | None = None, text: str | None = None, notes: str = "") -> Path | None:
        """Publish (nothing when no folder was given); return the path of ``study.yaml``."""
        if self.folder is None:
            return None
        from .host import library_versions

        if self.tee is not None and sys.stdout is self.tee:
            sys.stdout = self.tee.stream
        try:
            load_end = [round(v, 2) for v in os.getloadavg()]
        except OSError:
            load_end = []
        host = {**self.host, "load_average_end": load_end, "wall_seconds": round(time.time() - self.t0, 1),
                "versions": {**self.host.get("versions", {}), **library_versions()}}
        root = repo_root_of(self.folder)
        path = publish_output(self.folder, command=[self.command], configs=[c for c in configs if c],
                              text=self.text if text is None else text, tables=tables, figures=figures, host=host,
                              repo_root=root, notes=notes)
        print(f"published {self.folder}")
        return path
