"""The module layout rules of design.md that a program can check: no import cycles among
the package's modules, the kernel model imports no tool and no config module, and the
model digest covers files that exist (a module split or renamed must not drop out of it)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# what oomactors/kernel/ may import at module level besides itself: the kill-policy API,
# and the engine's PSI accounting, units and error types
KERNEL_MAY_IMPORT = ("oomactors.kernel", "policies", "oomactors.psi", "oomactors.units", "oomactors.errors")


def _modules() -> dict[str, tuple[Path, bool]]:
    out = {}
    for pkg in ("oomactors", "policies"):
        for f in (ROOT / pkg).rglob("*.py"):
            parts = list(f.relative_to(ROOT).with_suffix("").parts)
            is_pkg = parts[-1] == "__init__"
            out[".".join(parts[:-1] if is_pkg else parts)] = (f, is_pkg)
    return out


def _imported(mod: str, is_pkg: bool, node: ast.Import | ast.ImportFrom) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if node.level:
        base = mod.split(".") if is_pkg else mod.split(".")[:-1]
        base = base[: len(base) - node.level + 1]
        name = ".".join(base + ([node.module] if node.module else []))
    else:
        name = node.module or ""
    return [name] + [f"{name}.{a.name}" for a in node.names]  # `from pkg import module` too


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports when it is imported: module-level imports,
    not those inside functions or under ``if TYPE_CHECKING``."""
    mods = _modules()
    graph: dict[str, set[str]] = {}
    for mod, (path, is_pkg) in mods.items():
        deps: set[str] = set()

        def walk(body: list[ast.stmt]) -> None:
            for n in body:
                if isinstance(n, (ast.Import, ast.ImportFrom)):
                    deps.update(d for d in _imported(mod, is_pkg, n) if d in mods and d != mod)
                elif isinstance(n, ast.If) and "TYPE_CHECKING" not in ast.unparse(n.test):
                    walk(n.body)
                    walk(n.orelse)
                elif isinstance(n, ast.Try):
                    walk(n.body)
                    walk(n.orelse)
                    walk(n.finalbody)
                    for h in n.handlers:
                        walk(h.body)

        walk(ast.parse(path.read_text()).body)
        graph[mod] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))
    return found


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles() -> None:
    graph = import_graph()
    assert "oomactors.kernel.oom_select" in graph["oomactors.kernel.oom_kill"]  # the graph is read
    assert cycles(graph) == []


def test_the_kernel_model_imports_no_tool_and_no_config() -> None:
    graph = import_graph()
    wrong = sorted((m, d) for m, deps in graph.items() if m.startswith("oomactors.kernel.")
                   for d in deps if not d.startswith(KERNEL_MAY_IMPORT))
    assert wrong == []


def test_the_model_digest_covers_files_that_exist() -> None:
    from oomactors.repro import MODEL_SOURCES
    missing = [e for e in MODEL_SOURCES if not ((ROOT / e).is_dir() if e.endswith("/") else (ROOT / e).is_file())]
    assert missing == []
    # every part of a split model module is covered with it
    for stem in ("config", "userspace"):
        parts = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "oomactors").glob(f"{stem}*.py"))
        assert parts and set(parts) <= set(MODEL_SOURCES), parts
