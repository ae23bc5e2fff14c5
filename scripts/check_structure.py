"""Structure check (issue 13 targets): import cycles, imports against the layer order, long functions.

    python scripts/check_structure.py [--max-lines 80]

Every import counts, also the ones inside functions (a lazy import is still a dependency). The layer
order is the one docs/architecture.md states; a module may import its own layer and the ones below.
It also finds file names spelled out in the core away from their owner (OWNED_NAMES).
Exit code 1 when a cycle, an upward import or such a literal exists (long functions are listed, not fatal).
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# Lowest first. A package not listed here belongs to the layer of its parent package.
LAYERS: list[tuple[str, ...]] = [
    ("malenia.errors", "malenia.paths", "malenia.aspects", "malenia.atomic", "malenia.json_files", "malenia.progress_lines",
     "malenia.process_tree", "malenia.links", "malenia.file_hash", "malenia.tensor_files"),
    ("malenia.knowledge",),
    ("malenia.data",),
    ("malenia.model",),
    ("malenia.infer",),
    ("malenia.train",),
    ("malenia.evaluate",),
    ("malenia.server",),
    ("malenia.commands", "malenia.cli", "malenia.__main__"),
    ("MaleniaCommon", "MaleniaCommonLib"),
    ("MaleniaSegmentLib", "MaleniaSegment", "MaleniaTrainerLib", "MaleniaTrainer"),
]
# Modules of one layer that must not import each other (the two Slicer modules share MaleniaCommonLib instead).
SIBLINGS = [(("MaleniaSegmentLib", "MaleniaSegment"), ("MaleniaTrainerLib", "MaleniaTrainer"))]
# Import roots, relative to the repository.
ROOTS = {"malenia": "malenia", "MaleniaSegmentLib": "MaleniaSegment/MaleniaSegmentLib",
         "MaleniaTrainerLib": "MaleniaTrainer/MaleniaTrainerLib",
         "MaleniaCommonLib": "MaleniaCommon/MaleniaCommonLib", "MaleniaCommon": "MaleniaCommon"}
SCRIPTS = {"MaleniaSegment": "MaleniaSegment/MaleniaSegment.py", "MaleniaTrainer": "MaleniaTrainer/MaleniaTrainer.py"}
# One owner per file name: code (not docstrings or comments) elsewhere in the core names these files
# through the owner's constants (malenia.data.dataset.IMAGE_FILE, ...), so a rename happens in one place.
OWNED_NAMES = {
    **{name: "malenia.data.dataset" for name in
       ("dataset.json", "image.nii.gz", "lesions.nii.gz", "report.json", "organs.nii.gz")},
    **{name: "malenia.model.folder" for name in
       ("manifest.json", "weights.safetensors", "attribute_bank.safetensors", "knowledge_table.json", "inference.json")},
    **{name: "malenia.infer.outputs" for name in ("lesions.seg.nrrd", "lesions.dcm", "report.html")},
    "lesion_verifier.json": "malenia.model.lesion_verifier",
    "measured_attributes.json": "malenia.knowledge.measured_attributes",
}
# Where the same spelling means another format than the owner's (not checked there).
OTHER_FORMATS = {
    ("malenia.data.importers.msd", "dataset.json"),  # the Medical Segmentation Decathlon's task index
    ("malenia.knowledge.table", "knowledge_table.json"),  # the built-in table in Resources/knowledge (its owner)
    ("malenia.train.checkpoint", "weights.safetensors"),  # a training checkpoint's own weights file
}
NAMES_CHECKED_IN = ("malenia",)  # the core; the Slicer modules' Libs are checked by their own tests


def modules(repo: Path = REPO) -> dict[str, Path]:
    out = {name: repo / rel for name, rel in SCRIPTS.items()}
    for root, rel in ROOTS.items():
        folder = repo / rel
        for path in sorted(folder.rglob("*.py")) if folder.is_dir() else []:
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join([root, *parts])] = path
    return {k: v for k, v in out.items() if v.is_file()}


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def layer(name: str) -> int | None:
    if name == "malenia":  # the package's __init__: version and nothing else
        return 0
    best = None
    for i, members in enumerate(LAYERS):
        for m in members:
            if (name == m or name.startswith(m + ".")) and (best is None or len(m) > best[1]):
                best = (i, len(m))
    return None if best is None else best[0]


def _within(name: str, roots: tuple[str, ...]) -> bool:
    return any(name == r or name.startswith(r + ".") for r in roots)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def long_functions(mods: dict[str, Path], limit: int, repo: Path = REPO) -> list[tuple[int, str]]:
    out = []
    for name, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > limit:
                    out.append((n, f"{path.relative_to(repo)}:{node.lineno} {node.name}"))
    return sorted(out, reverse=True)


def _docstrings(tree: ast.AST) -> set[int]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                out.add(id(first.value))
    return out


def owned_name_literals(mods: dict[str, Path], repo: Path = REPO) -> list[str]:
    """String literals in code that spell out a file name another module owns (OWNED_NAMES)."""
    out = []
    for name, path in mods.items():
        if not _within(name, NAMES_CHECKED_IN):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docs = _docstrings(tree)
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Constant) and isinstance(node.value, str)) or id(node) in docs:
                continue
            for file_name, owner in OWNED_NAMES.items():
                spelled = node.value == file_name or node.value.endswith(("/" + file_name, "\\" + file_name))
                if spelled and name != owner and (name, file_name) not in OTHER_FORMATS:
                    out.append(f"{path.relative_to(repo)}:{node.lineno} {file_name!r} (owner: {owner})")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--max-lines", type=int, default=80)
    p.add_argument("--root", type=Path, default=REPO, help="repository to check (default: this one)")
    args = p.parse_args(argv)
    repo = args.root.resolve()
    mods = modules(repo)
    graph = {m: imports(m, path, set(mods)) for m, path in mods.items()}
    # a package's __init__ importing its own submodules is not a cycle of concepts
    graph = {m: {d for d in deps if not d.startswith(m + ".")} for m, deps in graph.items()}
    found = cycles(graph)
    for comp in found:
        print("cycle:", " <-> ".join(comp))
    upward = [(m, d) for m, deps in graph.items() for d in sorted(deps)
              if layer(m) is not None and layer(d) is not None and layer(d) > layer(m)]
    for m, d in upward:
        print(f"upward import: {m} -> {d}")
    for m, deps in graph.items():
        for a, b in SIBLINGS:
            for mine, other in ((a, b), (b, a)):
                if _within(m, mine):
                    for d in sorted(deps):
                        if _within(d, other):
                            upward.append((m, d))
                            print(f"sibling import: {m} -> {d}")
    unplaced = sorted(m for m in mods if layer(m) is None)
    for m in unplaced:
        print(f"no layer: {m}")
    literals = owned_name_literals(mods, repo)
    for where in literals:
        print(f"file name spelled out: {where}")
    for n, where in long_functions(mods, args.max_lines, repo):
        print(f"long function ({n} lines): {where}")
    return 1 if found or upward or unplaced or literals else 0


if __name__ == "__main__":
    sys.exit(main())
