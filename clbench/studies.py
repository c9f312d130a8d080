"""Published results: ``results/<study>/`` holds the small, committed output of a run or a bench script.

A study folder holds the tables (CSV/Markdown) and figures a run produced, and ``study.yaml``::

    name: frozen_cifar10
    command: [clbench run configs/split_cifar10_frozen.yaml, clbench report runs/split_cifar10_frozen --publish ...]
    configs: {configs/split_cifar10_frozen.yaml: <sha256 of the file>}
    host: {cpu: ..., cores: 2, load_average: [...], device: ..., versions: {...}}
    generated: 2026-12-01T04:00:00+00:00
    files: [main_table.md, main_table.csv, ...]

The documentation includes these files at build time; prose may interpret the numbers but never retypes
them. :func:`stale_studies` names every study whose config no longer exists or whose content changed since
the numbers were measured (a test runs it).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .files import atomic_write_bytes, atomic_write_yaml, load_yaml_file

STUDY_FILE = "study.yaml"


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


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


def write_study(folder: str | Path, *, command: Sequence[str], configs: Sequence[str | Path] = (),
                host: Mapping[str, Any] | None = None, files: Mapping[str, bytes] | None = None,
                repo_root: str | Path = ".", notes: str = "") -> Path:
    """Write the files of a study and its ``study.yaml`` (config paths relative to ``repo_root``, hashed)."""
    folder, root = Path(folder), Path(repo_root).resolve()
    for name, data in (files or {}).items():
        atomic_write_bytes(folder / name, data)
    rel = {}
    for c in configs:
        p = Path(c).resolve()
        rel[str(p.relative_to(root)) if p.is_relative_to(root) else str(p)] = file_sha256(p)
    names = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and p.name != STUDY_FILE)
    study = Study(folder.name, list(command), rel, dict(host or {}), datetime.now(timezone.utc).isoformat(timespec="seconds"),
                  names, notes)
    atomic_write_yaml(folder / STUDY_FILE, asdict(study))
    return folder / STUDY_FILE


def read_study(folder: str | Path) -> Study:
    data = load_yaml_file(Path(folder) / STUDY_FILE)
    return Study(**{k: v for k, v in data.items() if k in Study.__dataclass_fields__})


def stale_studies(results: str | Path, repo_root: str | Path = ".") -> list[str]:
    """Why each published study no longer matches the code: a missing config, a changed config, a missing file."""
    out = []
    root = Path(repo_root)
    for study_file in sorted(Path(results).glob(f"*/{STUDY_FILE}")):
        study = read_study(study_file.parent)
        for rel, digest in study.configs.items():
            path = root / rel
            if not path.exists():
                out.append(f"{study_file.parent.name}: names {rel}, which no longer exists")
            elif file_sha256(path) != digest:
                out.append(f"{study_file.parent.name}: {rel} changed since the numbers were measured (rerun: "
                           f"{'; '.join(study.command)})")
        for name in study.files:
            if not (study_file.parent / name).exists():
                out.append(f"{study_file.parent.name}: lists {name}, which is missing")
    return out
