"""The package's shape, measured: modules and lines per folder, the longest functions, import cycles between modules.

    python scripts/structure_report.py [--root DIR] [--out results/structure.json]

Issue 23 records these before and after its redesign (docs/BENCHMARKS.md §12). It reads source text only (``ast``):
nothing is imported, so it measures any checkout, e.g. an older commit's ``git worktree``.
"""

from __future__ import annotations

import argparse
import ast
import json
from collections import defaultdict
from pathlib import Path


def module_name(path: Path, package_root: Path) -> str:
    parts = list(path.relative_to(package_root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(tree: ast.Module, name: str, is_package: bool, known: set[str], deferred: bool) -> set[str]:
    """The package's modules that a module imports: at its top level, and with ``deferred`` inside functions too
    (``if TYPE_CHECKING`` blocks never run, so they are left out)."""
    found: set[str] = set()
    package = name if is_package else name.rpartition(".")[0]
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        nested = ast.Try | ast.If | (ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef if deferred else ast.Try)
        for item in ast.walk(node) if isinstance(node, nested) else [node]:
            if isinstance(item, ast.Import):
                found.update(alias.name for alias in item.names)
            elif isinstance(item, ast.ImportFrom):
                base = item.module or ""
                if item.level:
                    anchor = package.split(".")[: len(package.split(".")) - item.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                found.add(base)
                found.update(f"{base}.{alias.name}" for alias in item.names)
    return {m for m in found if m in known and m != name}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def measure(package_root: Path, longest: int = 10) -> dict:
    files = sorted(package_root.rglob("*.py"))
    known = {module_name(p, package_root) for p in files}
    per_folder: dict[str, dict[str, int]] = defaultdict(lambda: {"modules": 0, "lines": 0, "aliases": 0})
    functions: list[tuple[int, str]] = []
    graph: dict[str, set[str]] = {}
    deferred_graph: dict[str, set[str]] = {}
    for path in files:
        text = path.read_text()
        tree = ast.parse(text)
        name = module_name(path, package_root)
        folder = str(path.parent.relative_to(package_root.parent))
        if "sys.modules[__name__] =" in text:  # an old path kept as an alias of a moved module: not code
            per_folder[folder]["aliases"] += 1
            continue
        per_folder[folder]["modules"] += 1
        per_folder[folder]["lines"] += len(text.splitlines())
        graph[name] = imported_modules(tree, name, path.name == "__init__.py", known, deferred=False)
        deferred_graph[name] = imported_modules(tree, name, path.name == "__init__.py", known, deferred=True)
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                functions.append((node.end_lineno - node.lineno + 1, f"{name}.{node.name}"))
    functions.sort(reverse=True)
    return {"modules": sum(f["modules"] for f in per_folder.values()),
            "aliases": sum(f["aliases"] for f in per_folder.values()), "lines": sum(f["lines"] for f in per_folder.values()),
            "per_folder": dict(sorted(per_folder.items())),
            "longest_functions": [{"function": f, "lines": n} for n, f in functions[:longest]],
            "import_cycles": cycles(graph),
            # Modules that import each other when imports inside functions are counted too (e.g. suite <-> report):
            # not an error at import time, but two modules that cannot be understood apart.
            "import_cycles_with_deferred": cycles(deferred_graph)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1],
                        help="a checkout (default: this one)")
    parser.add_argument("--out", type=Path, help="also write the figures here as JSON")
    args = parser.parse_args()
    figures = measure(args.root / "lit_edit")
    print(f"{figures['modules']} modules, {figures['lines']} lines; {figures['aliases']} old paths kept as aliases")
    for folder, counts in figures["per_folder"].items():
        print(f"  {folder:<28} {counts['modules']:>3} modules {counts['lines']:>6} lines"
              + (f"  (+{counts['aliases']} aliases)" if counts["aliases"] else ""))
    print("longest functions:")
    for entry in figures["longest_functions"]:
        print(f"  {entry['lines']:>4}  {entry['function']}")
    print(f"import cycles: {len(figures['import_cycles'])}")
    for component in figures["import_cycles"]:
        print("  " + " <-> ".join(component))
    print(f"import cycles counting imports inside functions: {len(figures['import_cycles_with_deferred'])}")
    for component in figures["import_cycles_with_deferred"]:
        print("  " + " <-> ".join(component))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(figures, indent=1) + "\n")


if __name__ == "__main__":
    main()
