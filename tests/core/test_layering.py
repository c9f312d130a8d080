"""The layering rule, checked on the code itself (AST; function-local imports included).

core (clbench/*.py) imports no subpackage; benchmarks -> core; strategies -> core, benchmarks;
protocols -> core, benchmarks, strategies (only the CLI modules, protocols/cli/*, may import reports);
reports -> core. No import cycle between files.
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

REPO = Path(__file__).resolve().parents[2]
FOLDERS = {"clbench": "core", "benchmarks": "benchmarks", "strategies": "strategies", "protocols": "protocols",
           "reports": "reports"}
ALLOWED = {"core": set(), "benchmarks": {"core"}, "strategies": {"core", "benchmarks"},
           "protocols": {"core", "benchmarks", "strategies"}, "reports": {"core"}}


def modules() -> dict[str, tuple[str, Path]]:
    out = {}
    for folder, layer in FOLDERS.items():
        for path in (REPO / folder).rglob("*.py"):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[0] != "clbench":
                parts = ["clbench", *parts]
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = (layer, path)
    return out


def layer_of(name: str) -> str | None:
    p = name.split(".")
    if p[0] != "clbench":
        return None
    return p[1] if len(p) > 1 and p[1] in ("benchmarks", "strategies", "protocols", "reports") else "core"


def imports(mod: str, path: Path) -> list[tuple[str, int]]:
    package = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            out.append((target, node.lineno))
            out += [(f"{target}.{a.name}", node.lineno) for a in node.names]
    return out


def test_no_import_breaks_the_layering_and_no_cycle():
    mods = modules()
    assert len(mods) > 50
    bad, graph = [], nx.DiGraph()
    for mod, (layer, path) in mods.items():
        cli = mod.startswith("clbench.protocols.cli")
        for target, line in imports(mod, path):
            tl = layer_of(target)
            if tl is None:
                continue
            tm = target if target in mods else target.rsplit(".", 1)[0]
            if tm in mods and tm != mod:
                graph.add_edge(mod, tm)
            if tl != layer and tl not in ALLOWED[layer] and not (cli and tl == "reports"):
                bad.append(f"{path.relative_to(REPO)}:{line}: {layer} -> {tl} ({target})")
    cycles = [c for c in nx.strongly_connected_components(graph) if len(c) > 1]
    assert not bad, "layering broken:\n" + "\n".join(bad)
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(sorted(c)) for c in cycles)


def test_the_checker_sees_a_function_local_import(tmp_path):
    path = tmp_path / "m.py"
    path.write_text("def f():\n    from clbench.reports import report\n")
    assert ("clbench.reports", 2) in imports("clbench.benchmarks.m", path)
    assert layer_of("clbench.reports.report") not in ALLOWED["benchmarks"]
