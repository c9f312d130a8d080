"""MkDocs hooks: reference pages generated at build time from the code, so they cannot disagree with it.

A page holding a line ``<!-- clbench:NAME -->`` gets that line replaced by the generated Markdown of NAME:
``benchmarks``, ``strategies``, ``config``, ``cli``, ``metrics`` (from the same registries and docstrings
``clbench list`` and ``clbench --help`` read).
"""

from __future__ import annotations

import inspect
import io
import re
from contextlib import redirect_stdout

MARKER = re.compile(r"^<!-- clbench:([a-z_]+) -->$", re.M)


def _value(v) -> str:
    return "(required)" if v is inspect.Parameter.empty else f"`{v!r}`"


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def benchmarks() -> str:
    from clbench.benchmarks.registry import benchmark_names, resolve_benchmark

    out = []
    for name in benchmark_names():
        spec = resolve_benchmark(name)
        out.append(f"## `{name}`\n\n{spec.doc}\n")
        if spec.source is not None:
            s = spec.source
            sizes = ", ".join(f"{k} {v}" for k, v in s.split_sizes.items())
            out.append(f"Dataset: **{s.title}** (`{s.name}`), {s.n_classes} classes, samples {tuple(s.shape)}"
                       + (f", {sizes}" if sizes else "") + f"; files below the data root: `{s.folder}`.\n")
        out.append("| parameter | default | valid values |\n|---|---|---|")
        for k, v in spec.defaults.items():
            c = spec.constraints.get(k)
            out.append(f"| `{k}` | {_value(v)} | {_escape(c.describe()) if c else ''} |")
        out.append("")
    out.append("Every benchmark entry also takes `rehearsal: {...}`, `blurry: {...}`, `backbone:` and `label:` "
               "(see [Configuration](../guide/configuration.md)).")
    return "\n".join(out)


def strategies() -> str:
    from clbench.strategies.registry import available_strategies

    out = []
    for name, cls in available_strategies().items():
        if not isinstance(cls, type):
            out.append(f"## `{name}`\n\nunavailable here: {cls}\n")
            continue
        doc = inspect.getdoc(cls) or ""
        first, _, rest = doc.partition("\n")
        flags = [f for f, on in (("frozen features", cls.wants_features), ("online", cls.online)) if on]
        out.append(f"## `{name}`\n\n**{first}**" + (f" *({', '.join(flags)})*" if flags else "") + "\n")
        if rest.strip():
            out.append(rest.strip() + "\n")
        space = getattr(cls, "search_space", {}) or {}
        cons = cls.constraints()
        out.append("| hyperparameter | default | valid values | search space |\n|---|---|---|---|")
        for k, v in cls.hyperparameters().items():
            out.append(f"| `{k}` | {_value(v)} | {_escape(cons[k].describe()) if k in cons else ''} | "
                       f"{_escape(space[k].describe()) if k in space else ''} |")
        out.append(f"\nScenarios: {', '.join(cls.scenarios)}. Class: `{cls.__module__}.{cls.__qualname__}`.\n")
    return "\n".join(out)


def config() -> str:
    from clbench.protocols.config import TOP_CONSTRAINTS, TOP_KEYS
    from clbench.protocols.tune_config import SEARCH_KEYS, TUNE_KEYS

    out = ["## `clbench run`\n", "| key | what | valid values |\n|---|---|---|"]
    for k, what in TOP_KEYS.items():
        c = TOP_CONSTRAINTS.get(k)
        out.append(f"| `{k}` | {_escape(what)} | {_escape(c.describe()) if c else ''} |")
    out += ["\n## `clbench tune` (in addition)\n", "| key | what |\n|---|---|"]
    out += [f"| `{k}` | {_escape(v)} |" for k, v in TUNE_KEYS.items()]
    out += ["\n### `search:`\n", "| key | what |\n|---|---|"]
    out += [f"| `{k}` | {_escape(v)} |" for k, v in SEARCH_KEYS.items()]
    return "\n".join(out)


def cli() -> str:
    from clbench.protocols.cli import build_parser

    parser = build_parser()
    out = ["## `clbench`\n", "```text\n" + parser.format_help().strip() + "\n```\n"]
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for name, p in sub.choices.items():
        out.append(f"## `clbench {name}`\n\n```text\n{p.format_help().strip()}\n```\n")
    return "\n".join(out)


def metrics() -> str:
    from clbench import metrics as m

    out = []
    for name, fn in inspect.getmembers(m, inspect.isfunction):
        if fn.__module__ == m.__name__ and not name.startswith("_"):
            out.append(f"## `{name}`\n\n```text\n{inspect.getdoc(fn)}\n```\n")
    return "\n".join(out)


GENERATORS = {"benchmarks": benchmarks, "strategies": strategies, "config": config, "cli": cli, "metrics": metrics}


def on_page_markdown(markdown: str, page, config, files, **kwargs) -> str:  # noqa: ARG001 - MkDocs hook signature
    def generate(match: re.Match) -> str:
        name = match.group(1)
        if name not in GENERATORS:
            raise ValueError(f"{page.file.src_path}: unknown generated section {name!r}; valid: {', '.join(GENERATORS)}")
        with redirect_stdout(io.StringIO()):
            return GENERATORS[name]()

    return MARKER.sub(generate, markdown)
