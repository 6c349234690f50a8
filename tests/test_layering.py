"""The layering of docs/design.md ("Layering"), as rules on package prefixes: the numerical core imports
nothing above it; the science (tasks, models, datasets, poison, defend, interp) never imports experiments, the
report, the runtime or the CLI; an experiment never imports another experiment, the store, the report
or matplotlib; the runtime imports only the record. No module imports itself back through others (no
import cycle)."""

import ast
import subprocess
import sys
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "src" / "implicitbias"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module ``path`` names in an import statement (anywhere in the file), resolved."""
    mod = _module_name(path)
    package = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names)  # `from pkg import module`
    return out


MODULES = {_module_name(p): p for p in PKG.rglob("*.py")}
GRAPH = {m: {i for i in _imports(p) if i in MODULES and i != m} for m, p in MODULES.items()}


P = "implicitbias."
SCIENCE = ("tasks", "models", "datasets", "poison", "defend", "interp")
# (the modules a rule is about, the prefixes they may not import, what may be imported under them anyway)
RULES = {
    "core imports nothing above it": ((P + "core",), (P,), (P + "core",)),
    "the science never imports experiments, report, runtime or cli": (
        tuple(P + s for s in SCIENCE), tuple(P + s for s in ("experiments", "report", "runtime", "cli")), ()),
    "the runtime imports only the record": ((P + "runtime",), (P,), (P + "runtime", P + "record")),
    "experiments never import the store, the report or matplotlib": (
        (P + "experiments.",), (P + "runtime.store", P + "report", "matplotlib"), ()),
}


def reads_only_presets(module: str, other: str) -> bool:
    """Whether ``module`` uses the experiment module ``other`` only to read its ``PRESETS`` (a cell of
    another experiment named by its preset), never its other names."""
    return source_reads_only_presets(MODULES[module].read_text(), other.rsplit(".", 1)[1])


def source_reads_only_presets(source: str, leaf: str) -> bool:
    """:func:`reads_only_presets` on the text of a module and the sibling's name ``leaf``."""
    tree = ast.parse(source)
    aliases = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module == leaf:
            if any(a.name != "PRESETS" for a in node.names):
                return False
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module is None:
            aliases |= {a.asname or a.name for a in node.names if a.name == leaf}
    names = [n for n in ast.walk(tree) if isinstance(n, ast.Name) and n.id in aliases]
    reads = [n for n in ast.walk(tree) if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name)
             and n.value.id in aliases and n.attr == "PRESETS"]
    return len(names) == len(reads)


def violations(graph: dict[str, set[str]], presets_only=reads_only_presets) -> list[str]:
    """``module -> imported module`` edges of ``graph`` that break a rule of :data:`RULES`, and every
    experiment module that uses another experiment module for more than its ``PRESETS``
    (``presets_only(module, other)``; the registry, ``experiments/__init__``, imports them all). The
    package root (``implicitbias``: ``__version__``) is importable from anywhere."""
    out = []
    for rule, (who, banned, allowed) in RULES.items():
        for m in sorted(graph):
            if not m.startswith(who):
                continue
            for i in sorted(graph[m]):
                if i != "implicitbias" and i.startswith(banned) and not i.startswith(allowed):
                    out.append(f"{m} -> {i} ({rule})")
    for m in sorted(graph):
        if m.startswith(P + "experiments."):
            for i in sorted(graph[m]):
                if i.startswith(P + "experiments.") and i != m and not presets_only(m, i):
                    out.append(f"{m} -> {i} (an experiment imports another experiment)")
    return out


def test_every_module_keeps_the_layering():
    bad = violations(GRAPH)
    assert not bad, "\n".join(bad)


def test_the_layering_check_finds_a_violation():
    """Each rule catches an edge that breaks it (a graph with one bad edge per rule)."""
    bad = {
        P + "core.train": {P + "record", P + "core.optim"},
        P + "tasks.chains": {P + "runtime.store", P + "core.train"},
        P + "runtime.store": {P + "record", P + "experiments", P + "core.stats"},
        P + "experiments.defense": {P + "experiments.realworld", P + "tasks.chains"},
        P + "experiments.table1": {"matplotlib.pyplot"},
    }
    found = violations(bad, presets_only=lambda m, i: False)
    assert found == [
        "implicitbias.core.train -> implicitbias.record (core imports nothing above it)",
        "implicitbias.tasks.chains -> implicitbias.runtime.store "
        "(the science never imports experiments, report, runtime or cli)",
        "implicitbias.runtime.store -> implicitbias.core.stats (the runtime imports only the record)",
        "implicitbias.runtime.store -> implicitbias.experiments (the runtime imports only the record)",
        "implicitbias.experiments.table1 -> matplotlib.pyplot "
        "(experiments never import the store, the report or matplotlib)",
        "implicitbias.experiments.defense -> implicitbias.experiments.realworld "
        "(an experiment imports another experiment)",
    ]
    assert violations({P + "core.train": {P + "core.optim", "implicitbias"}}) == []
    # reading another experiment's presets is allowed, any other name of it is not
    assert reads_only_presets(P + "experiments.dynamics", P + "experiments.table1")
    assert source_reads_only_presets("from . import table1\nx = table1.PRESETS['a']\n", "table1")
    assert not source_reads_only_presets("from . import table1\nx = table1.run(table1.PRESETS['a'])\n", "table1")
    assert not source_reads_only_presets("from .realworld import PRESETS, run_seed\n", "realworld")
    assert source_reads_only_presets("from .realworld import PRESETS\n", "realworld")


def test_importing_the_store_loads_no_experiment():
    code = (
        "import sys, implicitbias.runtime.store; "
        "print(sorted(m for m in sys.modules if m.startswith(('implicitbias.experiments', 'implicitbias.report'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of ``graph`` (module -> modules it imports) as a path ``[m, ..., m]``, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 1:
                return stack[stack.index(n) :] + [n]
            if n not in state and (cycle := visit(n)):
                return cycle
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (cycle := visit(m)):
            return cycle
    return None


def test_no_import_cycle():
    # a module inside a package names that package when it imports a sibling (`from . import x`);
    # the package is already loading by then, so that edge is no dependency
    graph = {m: {i for i in deps if not m.startswith(i + ".")} for m, deps in GRAPH.items()}
    assert "implicitbias.experiments.table1" in graph["implicitbias.report.table1"]  # edges are found
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_the_cycle_check_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
