"""The method pages (docs/methods) cannot drift from the code.

Each page marks its defaults tables with ``<!-- defaults: NAME -->`` (optionally ``; also: OTHER``, the table
documenting the keys NAME shares with OTHER); a row is ``| `key` | `value` | source |`` with the value in
YAML. These tests compare every row with the default in the code, require every hyperparameter of every
built-in strategy to be documented, check that the clbench files the pages name exist, and that every page is
in the site's navigation. They read Markdown only; no site is built.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from clbench.benchmarks.blurry import check_blurry
from clbench.benchmarks.permuted import permuted_stream
from clbench.benchmarks.rehearsal import PRESETS, RehearsalSchedule
from clbench.benchmarks.split import split_stream
from clbench.files import load_yaml_text
from clbench.strategies.registry import BUILTIN, resolve_strategy

ROOT = Path(__file__).resolve().parents[2]
PAGES = ROOT / "docs" / "methods"
MARKER = re.compile(r"^<!-- defaults: (?P<name>[^;>]+?)(?:; also: (?P<also>[^>]+?))? -->$")
ROW = re.compile(r"^\|\s*`(?P<key>[^`]+)`\s*\|\s*`(?P<value>[^`]*)`\s*\|")
#: clbench's own files named in backticks (official repositories' paths start otherwise)
OWN_PATH = re.compile(r"`((?:clbench|benchmarks|strategies|protocols|reports|bench|configs|tests)/[\w./-]+\.(?:py|yaml|sh))`")


@dataclasses.dataclass
class Table:
    page: str
    line: int
    rows: dict[str, Any]
    also: list[str]


def read_tables() -> dict[str, Table]:
    """Every defaults table of the method pages, by its marker's name."""
    out: dict[str, Table] = {}
    for page in sorted(PAGES.glob("*.md")):
        lines = page.read_text(encoding="utf-8").splitlines()
        for i, line in enumerate(lines):
            m = MARKER.match(line)
            if not m:
                continue
            name = m.group("name").strip()
            assert name not in out, f"{page.name}:{i + 1}: a second defaults table for {name!r} (first in {out.get(name)})"
            rows: dict[str, Any] = {}
            j = i + 1
            if j < len(lines) and lines[j].startswith("|"):
                j += 2  # header and separator
                while j < len(lines) and lines[j].startswith("|"):
                    r = ROW.match(lines[j])
                    assert r, f"{page.name}:{j + 1}: a defaults row reads | `name` | `value` | ..., got {lines[j]!r}"
                    assert r.group("key") not in rows, f"{page.name}:{j + 1}: {r.group('key')!r} twice"
                    rows[r.group("key")] = load_yaml_text(r.group("value"))
                    j += 1
            also = [a.strip() for a in (m.group("also") or "").split(",") if a.strip()]
            out[name] = Table(page.name, i + 1, rows, also)
    return out


TABLES = read_tables()


def same(doc: Any, code: Any) -> bool:
    """The documented YAML value equals the code's default (tuples as lists; a bool is not a number)."""
    if isinstance(code, tuple):
        code = list(code)
    if isinstance(doc, bool) or isinstance(code, bool):
        return type(doc) is type(code) and doc == code
    if isinstance(code, (int, float)) and isinstance(doc, (int, float)):
        return float(doc) == float(code)
    return type(doc) is type(code) and doc == code


def kwarg_defaults(fn: Any, skip: tuple[str, ...]) -> dict[str, Any]:
    return {n: p.default for n, p in inspect.signature(fn).parameters.items()
            if p.kind is p.KEYWORD_ONLY and n not in skip}


#: non-strategy tables and the code defaults they document
OTHER = {
    "split": lambda: kwarg_defaults(split_stream, ("seed", "params")),
    "permuted": lambda: kwarg_defaults(permuted_stream, ("seed", "params")),
    "rehearsal": lambda: {f.name: f.default for f in dataclasses.fields(RehearsalSchedule)},
    "blurry": lambda: check_blurry({}),
    **{f"preset {name}": (lambda name=name: dict(PRESETS[name])) for name in PRESETS},
}


def code_defaults(name: str) -> dict[str, Any]:
    if name in OTHER:
        return OTHER[name]()
    return resolve_strategy(name).hyperparameters()


def test_pages_have_tables() -> None:
    assert TABLES, f"no <!-- defaults: NAME --> table found under {PAGES}"


@pytest.mark.parametrize("name", sorted(BUILTIN) + sorted(OTHER))
def test_every_builtin_is_documented(name: str) -> None:
    assert name in TABLES, (f"docs/methods has no defaults table for {name!r}; fix: add '<!-- defaults: {name} -->' and a "
                            f"table of its parameters (default and where it comes from) to its method page")


@pytest.mark.parametrize("name", sorted(TABLES))
def test_documented_defaults_match_the_code(name: str) -> None:
    table = TABLES[name]
    assert name in BUILTIN or name in OTHER, f"{table.page}:{table.line}: {name!r} is neither a built-in strategy nor one of {sorted(OTHER)}"
    code = code_defaults(name)
    where = f"{table.page}:{table.line} ({name})"
    unknown = sorted(set(table.rows) - set(code))
    assert not unknown, f"{where}: documents {unknown}, which the code does not have"
    wrong = {k: (v, code[k]) for k, v in table.rows.items() if not same(v, code[k])}
    assert not wrong, f"{where}: documented default != code default: {wrong}"
    inherited = {}
    for other in table.also:
        assert other in TABLES, f"{where}: 'also: {other}' names no defaults table"
        inherited.update({k: v for k, v in TABLES[other].rows.items() if k not in table.rows})
    missing = sorted(set(code) - set(table.rows) - set(inherited))
    assert not missing, f"{where}: hyperparameters without a documented default: {missing}"
    changed = {k: (inherited[k], code[k]) for k in set(code) & set(inherited) if not same(inherited[k], code[k])}
    assert not changed, f"{where}: defaults that differ from the table it shares ({table.also}); document them here: {changed}"


def test_named_clbench_files_exist() -> None:
    missing = []
    for page in sorted(PAGES.glob("*.md")):
        for path in OWN_PATH.findall(page.read_text(encoding="utf-8")):
            if not (ROOT / path).exists():
                missing.append(f"{page.name}: {path}")
    assert not missing, f"method pages name files that do not exist: {missing}"


def test_every_page_is_in_the_navigation() -> None:
    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("", lambda loader, suffix, node: None)  # !!python/name:... and other tags
    config = yaml.load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"), Loader=Loader)

    def paths(node: Any) -> list[str]:
        if isinstance(node, str):
            return [node]
        if isinstance(node, list):
            return [p for n in node for p in paths(n)]
        if isinstance(node, dict):
            return [p for v in node.values() for p in paths(v)]
        return []

    listed = set(paths(config.get("nav", [])))
    pages = {f"methods/{p.name}" for p in PAGES.glob("*.md")}
    assert not pages - listed, f"method pages missing from mkdocs.yml nav: {sorted(pages - listed)}"
