"""Measure the code's structure: import cycles, imports against the pipeline, longest function, largest module.

    python experiments/structure.py [--root DIR] [--json FILE]

The pipeline runs one way: foundations and section configs → data → embedding →
partition → plan → training (central and the federated engine) → defences
(privacy, secure aggregation) and attacks → assembly (runner, attack runs,
report, CLI). Every import between fedicd modules, at module level or inside a
function, is an edge; an edge from an earlier stage to a later one is a
*backward import*. A section's config module (``fedicd/<stage>/config.py``)
is configuration: it may be imported from any stage and imports foundations only.

Run it on two checkouts (``--root``) to compare before and after a change.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from pathlib import Path

__all__ = ["STAGES", "stage_of", "import_graph", "cycles", "backward_imports", "longest_functions", "measure"]

# (stage rank, stage name, module prefixes); the first prefix that matches decides (longest prefixes first)
STAGES: list[tuple[int, str, tuple[str, ...]]] = [
    (0, "foundation", ("fedicd.errors", "fedicd.config_types", "fedicd.output_dir", "fedicd.metrics",
                       "fedicd.losses", "fedicd.heads", "fedicd.scaling", "fedicd.provenance", "fedicd.plots",
                       "fedicd.train_config", "fedicd.sequences", "fedicd.heads_sequence")),
    (1, "data", ("fedicd.data",)),
    (2, "embedding", ("fedicd.embedding",)),
    (3, "partition", ("fedicd.partition",)),
    (4, "plan", ("fedicd.config", "fedicd.prepare", "fedicd.run_plan", "fedicd.partition_run")),
    (5, "training", ("fedicd.train", "fedicd.local_training", "fedicd.experiment", "fedicd.federated",
                     "fedicd.strategies", "fedicd.warm_start", "fedicd.retrieval")),
    (6, "defences", ("fedicd.privacy", "fedicd.secure")),
    (6, "attacks", ("attacks",)),
    (7, "assembly", ("fedicd.runner", "fedicd.deploy", "fedicd.attack_runs",
                     "fedicd.report", "fedicd.evaluate", "fedicd.cli", "fedicd.__main__")),
]
CONFIG_SUFFIX = ".config"  # a stage's own config section: configuration, importable from every stage


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def stage_of(module: str) -> tuple[int, str]:
    """(rank, name) of ``module``'s stage; a section config module (``*.config``) counts as configuration."""
    if module.endswith(CONFIG_SUFFIX) and module != "fedicd.config":
        return 0, "configuration"
    best = None
    for rank, name, prefixes in STAGES:
        for prefix in prefixes:
            if module == prefix or module.startswith(prefix + "."):
                if best is None or len(prefix) > best[0]:
                    best = (len(prefix), rank, name)
    return (best[1], best[2]) if best else (0, "foundation")


def _imports(tree: ast.AST, module: str, is_package: bool, modules: set[str]) -> set[str]:
    """The modules ``tree`` imports; ``from pkg import submodule`` names the submodule, not ``pkg``."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[:len(base) - node.level + (1 if is_package else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [f"{target}.{alias.name}" for alias in node.names]
            found.update(n for n in names if n in modules)
            if not all(n in modules for n in names):
                found.add(target)
    return found


def import_graph(root: Path) -> dict[str, set[str]]:
    """module → the fedicd/attacks modules it imports (anywhere in the file; its own parent packages,
    which Python imports first anyway, left out)."""
    files = {(_module_name(p, root), p) for pkg in ("fedicd", "attacks") for p in (root / pkg).rglob("*.py")}
    modules = {m for m, _ in files}
    graph = {}
    for module, path in sorted(files):
        targets = _imports(ast.parse(path.read_text()), module, path.name == "__init__.py", modules)
        graph[module] = {t for t in targets if t in modules and t != module and not module.startswith(t + ".")}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, out, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def _is_package_edge(src: str, dst: str) -> bool:
    """Not a pipeline edge: a package's ``__init__`` and its own submodules, or a section config module
    (``fedicd.X.config``) checking names against its own stage ``fedicd.X``."""
    if dst.startswith(src + ".") or src.startswith(dst + "."):
        return True
    return (src.endswith(CONFIG_SUFFIX) and src != "fedicd.config"
            and dst.startswith(src[:-len(CONFIG_SUFFIX)] + "."))


def backward_imports(graph: dict[str, set[str]]) -> list[tuple[str, str, str]]:
    """(importer, imported, "stage → stage") for every import from an earlier stage into a later one."""
    found = []
    for src, targets in sorted(graph.items()):
        rs, ns = stage_of(src)
        for dst in sorted(targets):
            rd, nd = stage_of(dst)
            if rd > rs and not _is_package_edge(src, dst):
                found.append((src, dst, f"{ns} → {nd}"))
    return found


def longest_functions(root: Path, top: int = 5) -> list[tuple[int, str]]:
    """(lines, "path:function") of the longest functions and methods."""
    sizes = []
    for pkg in ("fedicd", "attacks"):
        for path in (root / pkg).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    sizes.append((node.end_lineno - node.lineno + 1, f"{path.relative_to(root)}:{node.name}"))
    return sorted(sizes, reverse=True)[:top]


def largest_modules(root: Path, top: int = 5) -> list[tuple[int, str]]:
    sizes = [(len(p.read_text().splitlines()), str(p.relative_to(root)))
             for pkg in ("fedicd", "attacks") for p in (root / pkg).rglob("*.py")]
    return sorted(sizes, reverse=True)[:top]


def _count(root: Path, needles: tuple[str, ...], outside: tuple[str, ...]) -> dict[str, int]:
    counts = {}
    for needle in needles:
        counts[needle] = sum(p.read_text().count(needle) for p in (root / "fedicd").rglob("*.py")
                             if not any(str(p.relative_to(root)).startswith(o) for o in outside))
    return counts


def measure(root: Path) -> dict:
    graph = import_graph(root)
    return {
        "modules": len(graph),
        "import_cycles": cycles(graph),
        "backward_imports": [list(b) for b in backward_imports(graph)],
        "longest_functions": longest_functions(root),
        "largest_modules": largest_modules(root),
        "switchboard_outside_defences": _count(root, ('method == "', "method != \"", 'dp == "', 'dp != "',
                                                      '["dp"]', 'meta["'),
                                               ("fedicd/privacy", "fedicd/secure")),
    }


def _summary(m: dict) -> str:
    lines = [f"modules: {m['modules']}",
             f"import cycles: {len(m['import_cycles'])}" + "".join(f"\n  {' ↔ '.join(c)}" for c in m["import_cycles"]),
             f"backward imports: {len(m['backward_imports'])}"
             + "".join(f"\n  {s} → {d} ({why})" for s, d, why in m["backward_imports"]),
             "longest functions: " + ", ".join(f"{name} ({n})" for n, name in m["longest_functions"]),
             "largest modules: " + ", ".join(f"{name} ({n})" for n, name in m["largest_modules"]),
             "switchboard tokens outside fedicd/privacy and fedicd/secure: "
             + ", ".join(f"{k!r}: {v}" for k, v in m["switchboard_outside_defences"].items())]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1])
    parser.add_argument("--json", type=Path, help="also write the measurements here")
    args = parser.parse_args(argv)
    m = measure(args.root.resolve())
    print(_summary(m))
    if args.json:
        args.json.write_text(json.dumps(m, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
