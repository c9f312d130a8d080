"""MkDocs hooks: reference pages generated at build time from the code, so they cannot disagree with it.

A page holding a line ``<!-- clbench:NAME -->`` gets that line replaced by the generated Markdown of NAME:
``benchmarks``, ``strategies``, ``config``, ``cli``, ``metrics`` (from the same registries and docstrings
``clbench list`` and ``clbench --help`` read).

Results: :func:`on_files` adds a generated ``results/index.md`` (every study under ``<repo>/results/*/study.yaml``:
name, commands, host, generated date, staleness) and one page ``results/<study>/index.md`` per study (its
``study.yaml`` facts, then its ``report.md``/``output.md`` or else its Markdown tables, with its PNG figures copied
into the site), so the numbers on the site are the files the runs wrote, never retyped.
"""

from __future__ import annotations

import inspect
import io
import os
import re
from contextlib import redirect_stdout
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(os.environ.get("CLBENCH_DOCS_RESULTS") or REPO / "results")  # the override is for tests
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


# ------------------------------------------------------------------------------------------ results


def _demote(markdown: str) -> str:
    """Every ATX heading one level lower (outside fenced code), so an included document sits under the page title."""
    out, fence = [], ""
    for line in markdown.splitlines():
        stripped = line.lstrip()
        if fence:
            if stripped.startswith(fence):
                fence = ""
        elif stripped.startswith("```") or stripped.startswith("~~~"):
            fence = re.match(r"^(`{3,}|~{3,})", stripped).group(1)
        elif re.match(r"^#{1,5} ", line):
            line = "#" + line
        out.append(line)
    return "\n".join(out)


def _commands(study) -> str:
    return "<br>".join(f"`{_escape(c)}`" for c in study.command)


def _status(folder: Path) -> str:
    from clbench.studies import study_problems

    problems = study_problems(folder, REPO)
    return "current" if not problems else "**stale**: " + "; ".join(_escape(p) for p in problems)


def results_index(folders: list[Path]) -> str:
    from clbench.studies import host_line, read_study

    out = ["# Results", "",
           "Every table and figure on these pages is a file a run or a bench script wrote into `results/<study>/` "
           "(`clbench report RUN... --publish results/<study>`, or a script under `bench/` with `--publish`), included "
           "when the site is built. A study is *stale* when a config it names changed or disappeared since its numbers "
           "were measured (a test fails then).", ""]
    if not folders:
        out += ["No study has been published yet.", ""]
        return "\n".join(out)
    out += ["| study | commands | host | generated | status |", "|---|---|---|---|---|"]
    for folder in folders:
        study = read_study(folder)
        out.append(f"| [{folder.name}]({folder.name}/index.md) | {_commands(study)} | {_escape(host_line(study.host))} | "
                   f"{study.generated} | {_status(folder)} |")
    return "\n".join(out) + "\n"


def study_page(folder: Path) -> str:
    import yaml

    from clbench.studies import host_line, read_study

    study = read_study(folder)
    out = [f"# {folder.name}", "", f"Generated {study.generated}; status: {_status(folder)}.", "",
           "Commands (from the repository root):", "", "```bash", *study.command, "```", "",
           f"Host: {host_line(study.host)}.", ""]
    if study.configs:
        out += ["Configs (SHA-256 of the content the numbers were measured with):", ""]
        out += [f"- `{rel}` `{digest[:16]}…`" for rel, digest in study.configs.items()]
        out.append("")
    if study.notes:
        out += [study.notes, ""]
    out += ["Host facts as recorded:", "", "```yaml", *yaml.safe_dump(study.host, sort_keys=False).splitlines(), "```", ""]
    main = next((folder / n for n in ("report.md", "output.md") if (folder / n).is_file()), None)
    if main is not None:
        out.append(_demote(main.read_text(encoding="utf-8")))
    else:
        for name in study.files:
            if name.endswith(".md"):
                out += [f"## {name}", "", _demote(_demote((folder / name).read_text(encoding="utf-8"))), ""]
            elif name.endswith(".png"):
                out += [f"![{name}]({name})", ""]
    return "\n".join(out) + "\n"


def on_files(files, config):
    """Add the generated results pages and every study's PNG figures to the site (they live outside docs/)."""
    from mkdocs.structure.files import File

    from clbench.studies import find_studies

    folders = find_studies(RESULTS)
    generated = [File.generated(config, "results/index.md", content=results_index(folders))]
    for folder in folders:
        generated.append(File.generated(config, f"results/{folder.name}/index.md", content=study_page(folder)))
        for png in sorted(folder.rglob("*.png")):
            generated.append(File.generated(config, f"results/{folder.name}/{png.relative_to(folder).as_posix()}",
                                            abs_src_path=str(png)))
    for f in generated:
        old = files.get_file_from_path(f.src_uri)
        if old is not None:
            files.remove(old)
        files.append(f)
    return files
