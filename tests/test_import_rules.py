"""The package's layering, read from the source with ast: formats in the middle (``exchange/``),
the build side (lowering and exporters) on one side, the run side (backends, verify, map, run)
on the other, and no import circles. An import inside a function counts like one at the top."""
from __future__ import annotations

import ast
from collections import deque
from pathlib import Path

import pytest

import spikeclip_deploy

PACKAGE = "spikeclip_deploy"
ROOT = Path(spikeclip_deploy.__file__).parent
#: the lowering and the exporters (NIR, ONNX host ops, netx)
BUILD = ("lowering", "export")
#: what never opens hardware/, models/ or a model config: it reads an export's manifest
DATA = ("hardware", "config", "checkpoint")
#: (the modules a rule is for, the top-level modules and packages none of them may reach)
RULES = {
    "backends": BUILD + ("training", "nn") + DATA,
    "exchange": BUILD + ("training", "nn") + DATA,
    "mapping": BUILD + ("training", "nn") + DATA,
    "inference": BUILD + ("training", "nn") + DATA,
    "verify": BUILD + ("training", "plots"),  # it measures; the command line draws
    "nn": ("lowering", "training"),
    "checkpoint": ("lowering", "training"),
}


def module_files(root: Path = ROOT) -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, whether it is a package's ``__init__``)."""
    found = {}
    for f in sorted(root.rglob("*.py")):
        parts = (PACKAGE, *f.relative_to(root).with_suffix("").parts)
        package = parts[-1] == "__init__"
        found[".".join(parts[:-1] if package else parts)] = (f, package)
    return found


def imported(source: str, module: str, package: bool, known: set[str]) -> set[str]:
    """The package's modules that ``source`` (module ``module``) imports, anywhere in it: each
    ``from X import name`` counts as ``X.name`` when that is a module, else as ``X``."""
    out = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if package else module.split(".")[:-1]
                base = base[:len(base) - node.level + 1] + ([node.module] if node.module else [])
                origin = ".".join(base)
            else:
                origin = node.module or ""
            names = [f"{origin}.{a.name}" if f"{origin}.{a.name}" in known else origin
                     for a in node.names]
        else:
            continue
        for name in names:
            while name and name not in known:  # a name inside a module: the module
                name = name.rpartition(".")[0]
            if name and name != module:
                out.add(name)
    return out


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    files = module_files(root)
    return {m: imported(f.read_text(), m, package, set(files)) for m, (f, package) in files.items()}


def reach(graph: dict[str, set[str]], start: str) -> dict[str, str | None]:
    """Every module ``start`` imports, directly or not -> the module it was reached from."""
    came: dict[str, str | None] = {start: None}
    todo = deque([start])
    while todo:
        m = todo.popleft()
        for n in sorted(graph[m]):
            if n not in came:
                came[n] = m
                todo.append(n)
    return came


def chain(came: dict[str, str | None], end: str) -> str:
    path = [end]
    while came[path[-1]] is not None:
        path.append(came[path[-1]])
    return " -> ".join(reversed(path))


def top(module: str) -> str:
    """``spikeclip_deploy.lowering.passes`` -> ``lowering``."""
    return module.split(".")[1] if "." in module else ""


def violations(graph: dict[str, set[str]]) -> list[str]:
    """Every rule broken, with the chain of imports that breaks it."""
    found = []
    for module in sorted(graph):
        banned = RULES.get(top(module), ())
        came = reach(graph, module)
        found += [chain(came, m) for m in sorted(came) if m != module and top(m) in banned]
    return found


def circles(graph: dict[str, set[str]]) -> list[str]:
    """One chain per module that imports itself through others."""
    found = []
    for module in sorted(graph):
        for n in sorted(graph[module]):
            came = reach(graph, n)
            if module in came:
                found.append(f"{module} -> {chain(came, module)}")
                break
    return found


def test_the_layering_holds():
    graph = import_graph()
    assert len(graph) > 80 and "spikeclip_deploy.exchange.manifest" in graph  # all was read
    assert violations(graph) == []


def test_no_import_circles():
    assert circles(import_graph()) == []


def _with(graph: dict[str, set[str]], module: str, imports: str) -> dict[str, set[str]]:
    return {**graph, module: graph[module] | {imports}}


@pytest.mark.parametrize("module, imports", [
    ("spikeclip_deploy.backends.emulator", "spikeclip_deploy.hardware"),
    ("spikeclip_deploy.exchange.manifest", "spikeclip_deploy.nn.lif"),
    ("spikeclip_deploy.verify.harness", "spikeclip_deploy.export"),
    ("spikeclip_deploy.checkpoint", "spikeclip_deploy.lowering.qat"),
    ("spikeclip_deploy.nn.lif", "spikeclip_deploy.training.common"),
])
def test_a_planted_import_is_found(module, imports):
    graph = import_graph()
    assert violations(_with(graph, module, imports)) and not violations(graph)


def test_a_planted_circle_is_found():
    graph = _with(import_graph(), "spikeclip_deploy.errors", "spikeclip_deploy.exchange.manifest")
    assert "spikeclip_deploy.errors -> spikeclip_deploy.exchange.manifest -> " \
           "spikeclip_deploy.errors" in circles(graph)


def test_imports_are_read_from_the_source(tmp_path):
    """A function-level import, a relative one and ``from . import module`` all count; a name
    imported from a module counts as the module."""
    pkg = tmp_path / PACKAGE
    (pkg / "sub").mkdir(parents=True)
    for name in ("__init__", "a", "b", "sub/__init__", "sub/c"):
        (pkg / f"{name}.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from .sub import c\n    from .b import thing\n")
    (pkg / "sub" / "c.py").write_text("from .. import b\nfrom spikeclip_deploy.a import f\n")
    graph = import_graph(pkg)
    assert graph[f"{PACKAGE}.a"] == {f"{PACKAGE}.sub.c", f"{PACKAGE}.b"}
    assert graph[f"{PACKAGE}.sub.c"] == {f"{PACKAGE}.b", f"{PACKAGE}.a"}
    assert graph[f"{PACKAGE}.b"] == set()
