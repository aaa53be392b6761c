"""The package's shape: no import cycles, no two modules with the same name, and every rule's shell command
names a `genedml` subcommand that exists (rule -> subcommand -> module in one hop each)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from genedml.cli import SUBCOMMANDS
from support.workflow import REPO

PACKAGE = REPO / "genedml"


def module_name(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """genedml modules a file imports, at module level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("genedml"):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("genedml"))
    return found


def test_no_two_modules_share_a_name():
    names = {}
    for path in PACKAGE.rglob("*.py"):
        if path.name in ("__init__.py", "__main__.py"):
            continue
        names.setdefault(path.stem, []).append(str(path.relative_to(REPO)))
    packages = {p.name for p in PACKAGE.rglob("*") if p.is_dir() and (p / "__init__.py").exists()}
    clashes = {n: paths for n, paths in names.items() if len(paths) > 1 or n in packages | {"genedml"}}
    assert not clashes


def test_no_import_cycles():
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {m: {i for i in imports_of(p) if i in modules and i != m} for m, p in modules.items()}
    # a package's __init__ importing its own submodules is how packages expose names, not a cycle
    for m in graph:
        graph[m] = {i for i in graph[m] if not i.startswith(m + ".")}
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(m, stack):
        state[m] = 1
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycle.extend(stack[stack.index(n) :] + [n])
                return True
            if n not in state and visit(n, stack + [n]):
                return True
        state[m] = 2
        return False

    for m in sorted(graph):
        if m not in state and visit(m, [m]):
            break
    assert not cycle, " -> ".join(cycle)


def test_every_rule_calls_an_existing_subcommand():
    known = {name for name, *_ in SUBCOMMANDS}
    called = set()
    for rules in (REPO / "workflow" / "rules").glob("*.smk"):
        called |= set(re.findall(r'"genedml ([a-z-]+) ', rules.read_text()))
    assert called and called <= known, called - known


def test_a_command_line_builds_only_its_subcommands_flags():
    """Each rule's job parses only its own subcommand (the others' flags cost ~1 s of imports a job); the
    top-level help still lists every subcommand, and options of `genedml` itself may come first."""
    from genedml.cli import _command_of, build_parser

    assert _command_of(["--log-level", "DEBUG", "tile", "--sample", "S1"]) == "tile"
    assert _command_of(["--log-level=DEBUG", "train"]) == "train"
    assert _command_of(["--help"]) is None
    parser = build_parser("folds")
    args = parser.parse_args(["folds", "--sheet", "s.tsv", "--out", "f.tsv"])
    assert args.command == "folds" and callable(args.func)
    names = {name for name, *_ in SUBCOMMANDS}
    help_text = build_parser("folds").format_help()
    assert all(name in help_text for name in names)
    # a subcommand that was not built still parses as a name, but has no handler: main() never gets there
    # with it, because it builds the subcommand it is given
    assert not hasattr(build_parser("folds").parse_args(["summarize"]), "func")
