"""The house rules for imports, read from the source (ast), so that they stay true:

- sibling modules are imported at the top of a file; only heavy third-party libraries
  (:data:`HEAVY`) are imported inside functions, where a command may never need them;
- nothing inside the package imports from the package's ``__init__`` (``from melodia import …``,
  ``from . import __version__``);
- no module imports another module's private (``_name``) names;
- imports point down: a module imports only from its own layer or the layers below (a
  `__main__` is an entry point that nothing imports, so it may call the CLI)
  (:data:`LAYERS`), and the import graph has no cycle.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "melodia"

#: third-party libraries that cost a second or more to import, or are needed by one command only
HEAVY = {"torch", "transformers", "music21", "matplotlib", "miditok", "symusic", "pretty_midi", "peft",
         "safetensors", "midirenderer", "scipy", "sklearn", "threadpoolctl",
         "numpy",  # render.py keeps `import melodia.render` numpy-free (tests/test_render.py)
         "importlib"}  # cli's `info` reads package metadata: ~25 ms the other commands need not pay
#: melodia modules that import torch at their top, so they are imported lazily like torch
HEAVY_INTERNAL = {"model.leanstep"}

#: layers, bottom first; a module (or package: every module in it) may import from its own layer and below
LAYERS = [
    {"errors", "version", "fileio", "values"},
    {"music", "midifile", "fuzz"},
    {"model", "tokenizer", "chordtokens", "shards", "render", "corpus", "sources", "pop909", "prepare",
     "abc", "music21_source", "labels", "sections"},
    {"generate", "piece"},
    {"evaluate", "train"},
    {"api"},
    {"cli", "serve", "server", "request", "__main__"},
]


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG).with_suffix("")
        name = ".".join(rel.parts)
        if name.endswith("__init__"):
            name = name[: -len(".__init__")] if "." in name else ""
        out[name] = path
    return out


def _resolve(mod: str, node: ast.ImportFrom, is_pkg: bool) -> str:
    """The melodia-relative module an ImportFrom names ('' for the package root)."""
    if node.level == 0:
        return node.module[len("melodia"):].lstrip(".") if node.module else ""
    base = mod.split(".") if mod else []
    if not is_pkg:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
    return ".".join(base + ([node.module] if node.module else []))


def _top(name: str) -> str:
    return name.split(".")[0]


def _layer(name: str) -> int:
    top = _top(name)
    for i, layer in enumerate(LAYERS):
        if top in layer:
            return i
    raise AssertionError(f"melodia.{name} has no layer: add it to LAYERS in tests/test_imports.py")


def _imports(mod: str, path: Path) -> list[tuple[ast.AST, str | None, list[str], bool]]:
    """(node, melodia module or None, imported names, at top level) for each import in a file."""
    tree = ast.parse(path.read_text())
    is_pkg = path.name == "__init__.py"
    in_functions = {id(sub) for node in ast.walk(tree)
                    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
                    for sub in ast.walk(node) if sub is not node}
    out = []
    for node in ast.walk(tree):
        at_top = id(node) not in in_functions
        if isinstance(node, ast.ImportFrom):
            internal = node.level > 0 or (node.module or "").split(".")[0] == "melodia"
            target = _resolve(mod, node, is_pkg) if internal else None
            out.append((node, target, [a.name for a in node.names], at_top))
        elif isinstance(node, ast.Import):
            for a in node.names:
                internal = a.name.split(".")[0] == "melodia"
                out.append((node, a.name[len("melodia"):].lstrip(".") if internal else None,
                            [a.name], at_top))
    return out


ALL = _modules()


@pytest.mark.parametrize("mod", sorted(m for m in ALL if m))
def test_imports_follow_the_house_rules(mod):
    path = ALL[mod]
    problems = []
    for node, target, names, at_top in _imports(mod, path):
        where = f"{path.relative_to(PKG.parent)}:{node.lineno}"
        if target is None:  # third party or standard library
            root = names[0].split(".")[0] if isinstance(node, ast.Import) else (node.module or "").split(".")[0]
            if not at_top and root not in HEAVY:
                problems.append(f"{where}: `{root}` imported inside a function (only heavy libraries may be)")
            continue
        heavy = target in HEAVY_INTERNAL or any(f"{target}.{n}" in HEAVY_INTERNAL for n in names)
        if not at_top and not heavy:
            problems.append(f"{where}: melodia.{target} imported inside a function (import siblings at the top)")
        if target == "" and not (mod == "" or mod.endswith("__main__")):
            problems.append(f"{where}: imports from the package __init__ (use the module that defines it)")
            continue
        if target and _top(target) != _top(mod):
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if private:
                problems.append(f"{where}: imports private {', '.join(private)} of melodia.{target}")
            if mod and not mod.endswith("__main__") and _layer(target) > _layer(mod):
                problems.append(f"{where}: imports up, from melodia.{target} (layer {_layer(target)}) "
                                f"into melodia.{mod} (layer {_layer(mod)})")
    assert not problems, "\n".join(problems)


def test_no_import_cycles():
    graph: dict[str, set[str]] = {m: set() for m in ALL}
    for mod, path in ALL.items():
        for _node, target, names, at_top in _imports(mod, path):
            if target is None or not at_top:
                continue
            # `from .pkg import mod` names a module; `from .mod import name` names the module
            subs = [f"{target}.{n}" if target else n for n in names]
            found = [s for s in subs if s in ALL] or ([target] if target in ALL else [])
            graph[mod].update(f for f in found if f != mod)
    seen: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        seen[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if seen.get(n) == 1:
                cycle = stack[stack.index(n):] + [n]
                raise AssertionError("import cycle: " + " -> ".join(f"melodia.{c}" if c else "melodia"
                                                                  for c in cycle))
            elif n not in seen:
                visit(n)
        stack.pop()
        seen[m] = 2

    for m in sorted(graph):
        if m not in seen:
            visit(m)
