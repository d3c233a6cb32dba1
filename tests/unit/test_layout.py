"""The layers of streams/ and what each may import (docs/architecture.md), checked on the code:
every `import` of every module, at any depth (lazy imports inside functions count too)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "streams"

#: layer -> the layers it may import (besides itself). "base" is settings, topics, security,
#: errors: the modules every layer may use.
MAY_IMPORT = {
    "domain": set(),
    "base": {"domain"},
    "contract": {"domain", "base"},
    "broker": {"base"},
    "worker": {"domain", "contract", "base", "broker"},
    "feeds": {"domain", "contract", "base", "broker"},
    "tools": {"domain", "contract", "base", "broker", "feeds"},
    "cli": {"domain", "contract", "base", "broker", "feeds", "tools", "worker"},
}
#: Third-party packages that only some layers may import.
ONLY_IN = {"faust": {"worker"}, "mode": {"worker"}, "aiokafka": {"worker"}}
#: Modules allowed one of those anyway: the wire contract offered as faust.Record classes, for
#: Faust users' producers (nothing in streams/ imports it).
FAUST_RECORDS = {"streams.contract.records"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) >= 2 and parts[1] in ("domain", "contract", "worker", "feeds", "tools", "broker"):
        return parts[1]
    if module in ("streams.cli", "streams.__main__", "streams"):
        return "cli"
    return "base"


def imports(path: Path) -> list[tuple[str, list[str], int]]:
    """(module imported, names taken from it, line) for every import statement in the file."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(a.name, [], node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}:{node.lineno}: relative import (use streams.…)"
            out.append((node.module, [a.name for a in node.names], node.lineno))
    return out


MODULES = {module_name(p): p for p in SRC.rglob("*.py")}


def graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {m: set() for m in MODULES}
    for mod, path in MODULES.items():
        for target, names, _line in imports(path):
            if not target.startswith("streams"):
                continue
            for name in names or [""]:
                sub = f"{target}.{name}" if name else target
                edges[mod].add(sub if sub in MODULES else target)
    return edges


@pytest.mark.parametrize("mod", sorted(MODULES))
def test_each_module_imports_only_the_layers_below_it(mod):
    mine = layer(mod)
    bad = []
    for target, _names, line in imports(MODULES[mod]):
        top = target.split(".")[0]
        if top in ONLY_IN and mine not in ONLY_IN[top] and mod not in FAUST_RECORDS:
            bad.append(f"line {line}: {target} (only {', '.join(sorted(ONLY_IN[top]))} may)")
        if not target.startswith("streams.") and target != "streams":
            continue
        theirs = layer(target)
        if theirs != mine and theirs not in MAY_IMPORT[mine]:
            bad.append(f"line {line}: {target} ({theirs} is not below {mine})")
    assert not bad, f"{mod} ({mine}): " + "; ".join(bad)


def test_no_module_imports_another_modules_private_name():
    """(A package's __init__ may gather its own submodules' names: faust_patches/ does.)"""
    bad = []
    for mod, path in MODULES.items():
        package = mod if path.name == "__init__.py" else None
        for target, names, line in imports(path):
            if package and target.startswith(package + "."):
                continue
            if target.startswith("streams"):
                bad += [f"{mod}:{line} {target}.{n}" for n in names
                        if n.startswith("_") and n != "__version__"]
    assert bad == []


def test_there_is_no_import_cycle():
    edges = graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(node, stack):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt in edges and state.get(nxt) is None:
                visit(nxt, stack)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if state.get(node) is None:
            visit(node, [])
    # a package's __init__ importing its own submodules is not a cycle of layers
    cycles = [c for c in cycles if not all(p.startswith(c.split(" -> ")[0]) for p in c.split(" -> "))]
    assert cycles == []


def test_the_layers_named_here_are_the_folders_there_are():
    folders = {p.name for p in SRC.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert folders == {"domain", "contract", "worker", "feeds", "tools", "broker"}


def test_the_faust_records_module_is_imported_by_nothing_in_streams():
    users = [m for m, path in MODULES.items() for target, _n, _l in imports(path)
             if target in FAUST_RECORDS or (target == "streams.contract" and "records" in _n)]
    assert users == []
