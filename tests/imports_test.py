"""Imports go one way: no cycle among the modules of ``jaxface/`` and ``data_pipelines/``.

Every ``import`` and ``from ... import`` of each module counts, including those inside functions
(deferred imports hide a cycle from Python but not from a reader). A package counts as its
``__init__``; ``from pkg import mod`` is an import of ``pkg.mod`` when that module exists.
"""

import ast
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("jaxface", "data_pipelines")


def _modules() -> dict[str, str]:
  """``{dotted module name: path}`` of every .py file of the packages."""
  out = {}
  for pkg in PACKAGES:
    for root, dirs, files in os.walk(os.path.join(REPO, pkg)):
      dirs[:] = sorted(d for d in dirs if not d.startswith((".", "__pycache__")))
      for f in sorted(files):
        if not f.endswith(".py"):
          continue
        rel = os.path.relpath(os.path.join(root, f), REPO)[:-3].split(os.sep)
        if rel[-1] == "__init__":
          rel = rel[:-1]
        out[".".join(rel)] = os.path.join(root, f)
  return out


def _imports(name: str, path: str, known: set[str]) -> set[str]:
  """The modules of ``known`` that the module ``name`` imports anywhere in its body."""
  with open(path, encoding="utf-8") as f:
    tree = ast.parse(f.read(), path)
  is_package = path.endswith("__init__.py")
  package = name if is_package else name.rpartition(".")[0]
  found = set()

  def add(target: str) -> None:
    # The deepest known module named by the import (a name inside a module is that module).
    while target and target not in known:
      target = target.rpartition(".")[0]
    if target and target != name:
      found.add(target)

  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      for alias in node.names:
        add(alias.name)
    elif isinstance(node, ast.ImportFrom):
      if node.level:
        base = package.split(".")
        base = base[:len(base) - (node.level - 1)]
        module = ".".join(base + ([node.module] if node.module else []))
      else:
        module = node.module or ""
      for alias in node.names:
        full = f"{module}.{alias.name}"
        add(full if full in known else module)
  return found


def _graph() -> dict[str, set[str]]:
  modules = _modules()
  known = set(modules)
  return {name: _imports(name, path, known) for name, path in modules.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
  """One import cycle ``[a, b, ..., a]``, or None."""
  state: dict[str, int] = {}  # 1: on the current path, 2: done
  path: list[str] = []

  def visit(node: str) -> list[str] | None:
    state[node] = 1
    path.append(node)
    for nxt in sorted(graph.get(node, ())):
      if state.get(nxt) == 1:
        return path[path.index(nxt):] + [nxt]
      if nxt not in state:
        found = visit(nxt)
        if found:
          return found
    path.pop()
    state[node] = 2
    return None

  for node in sorted(graph):
    if node not in state:
      found = visit(node)
      if found:
        return found
  return None


def test_the_walk_sees_deferred_and_relative_imports():
  graph = _graph()
  assert "jaxface.train" in graph and "data_pipelines.build" in graph
  # trained.py imports jaxface.checkpointing only inside a function.
  assert "jaxface.checkpointing" in graph["jaxface.trained"]
  assert "jaxface.parallel" in graph["jaxface.evaluator"]
  assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
  assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle():
  cycle = _cycle(_graph())
  assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_layers_train_and_evaluate_do_not_import_each_other():
  graph = _graph()
  assert "jaxface.evaluate" not in graph["jaxface.train"]
  assert "jaxface.train" not in graph["jaxface.evaluate"]
  # The cli leaf is imported by the entry points' main()s, and imports no layer above it.
  assert graph["jaxface.cli"] <= {"jaxface.config_lib", "jaxface.errors"}
