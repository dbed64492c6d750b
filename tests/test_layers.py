"""Layers that only look down: no import cycle between vshx's modules, no import upwards.

Our own ast walk over vshx/: every import counts, at module level, inside a function and
under ``if TYPE_CHECKING:`` alike (an import inside a function hides a cycle, it does not
remove it).  The table below is the README's layout section ("Where things live").
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "vshx"

# lowest first; a module may import from its own layer or from a layer below it
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("vshx", "vshx.errors")),
    ("spec", ("vshx.spec",)),
    ("storage", ("vshx.storage",)),
    ("plans", ("vshx.plans",)),
    ("merging", ("vshx.merging",)),
    ("pluginhost", ("vshx.pluginhost",)),
    ("shell", ("vshx.shell", "vshx.completion", "vshx.api")),
    ("frontends", ("vshx.frontends", "vshx.__main__")),
]


def module_names() -> dict[str, Path]:
    found = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = module_names()


def layer_of(module: str) -> int:
    best, rank = -1, -1
    for number, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            exact = prefix == "vshx"  # the package itself, not everything under it
            if module == prefix or (not exact and module.startswith(prefix + ".")):
                if len(prefix) > best:
                    best, rank = len(prefix), number
    if rank < 0:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS and the README")
    return rank


def _target(name: str) -> str | None:
    """The vshx module an imported name lives in (a package's submodule where it is one)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str, path: Path) -> list[tuple[str, int, str]]:
    """(imported vshx module, line, where: top / function / TYPE_CHECKING) for one file."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[tuple[str, int, str]] = []

    def visit(node: ast.AST, where: str) -> None:
        for child in ast.iter_child_nodes(node):
            here = where
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                here = "function" if where == "top" else where
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                for inner in child.body:
                    visit_one(inner, "TYPE_CHECKING")
                for inner in child.orelse:
                    visit_one(inner, where)
                continue
            visit_one(child, here)

    def visit_one(node: ast.AST, where: str) -> None:
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                prefix = ".".join([*base, *([node.module] if node.module else [])])
            else:
                prefix = node.module or ""
            names = [f"{prefix}.{alias.name}" for alias in node.names]
        else:
            visit(node, where)
            return
        for name in names:
            target = _target(name)
            if target is not None and target != module:
                found.append((target, node.lineno, where))

    visit(ast.parse(path.read_text(), str(path)), "top")
    return found


GRAPH = {module: imports_of(module, path) for module, path in MODULES.items()}


def test_every_module_is_in_a_layer() -> None:
    for module in MODULES:
        layer_of(module)


def test_no_import_looks_up() -> None:
    upward = []
    for module, imports in GRAPH.items():
        for target, line, where in imports:
            if layer_of(target) > layer_of(module):
                upward.append(
                    f"{MODULES[module].relative_to(ROOT.parent)}:{line}: {module} "
                    f"({LAYERS[layer_of(module)][0]}) imports {target} "
                    f"({LAYERS[layer_of(target)][0]}) [{where}]"
                )
    assert not upward, "imports from a higher layer:\n" + "\n".join(upward)


def _cycles() -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target, _, _ in GRAPH[node]:
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
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

    for node in sorted(GRAPH):
        if node not in index:
            connect(node)
    return found


def test_no_import_cycle() -> None:
    assert _cycles() == []


def test_the_walk_sees_hidden_imports(tmp_path: Path) -> None:
    """The walk counts imports in functions and under TYPE_CHECKING (else it proves little)."""
    wheres = {where for imports in GRAPH.values() for _, _, where in imports}
    assert {"top", "function", "TYPE_CHECKING"} <= wheres


@pytest.mark.parametrize(
    "plugin", sorted((ROOT.parent / "plugins" / "vshx_plugins").glob("*.py")), ids=str
)
def test_plugins_import_only_the_api(plugin: Path) -> None:
    tree = ast.parse(plugin.read_text())
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = (
                [node.module] if node.module != "vshx" else [f"vshx.{a.name}" for a in node.names]
            )
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        for name in names:
            if name == "vshx" or name.startswith("vshx."):
                assert name == "vshx.api", f"{plugin.name}:{node.lineno} imports {name}"


def test_the_readme_lists_these_layers() -> None:
    """The README's layout section names the same layers, lowest first, with their folders."""
    import re

    readme = (ROOT.parent / "README.md").read_text()
    section = readme.split("## Where things live", 1)[1].split("\n## ", 1)[0]
    named = re.findall(r"^- \*\*([a-z]+)\*\*", section, re.MULTILINE)
    assert named == [name for name, _ in LAYERS] + ["plugins"]
    for _, prefixes in LAYERS:
        for prefix in prefixes:
            if prefix != "vshx":
                path = prefix.replace(".", "/")
                folder = f"`{path}/`" if (ROOT.parent / path).is_dir() else f"{path}.py"
                assert folder.strip("`") in section, f"{folder} is not in the README's layout"


def test_the_readme_names_every_module_in_its_layer() -> None:
    """Each module's file name is in its own layer's paragraph of the README's layout: a new
    module is described where a maintainer looks for it."""
    import re

    readme = (ROOT.parent / "README.md").read_text()
    section = readme.split("## Where things live", 1)[1].split("\n## ", 1)[0]
    paragraphs = dict(re.findall(r"^- \*\*([a-z]+)\*\*(.*?)(?=^- |^\S|\Z)", section, re.M | re.S))
    for module, path in MODULES.items():
        if path.name == "__init__.py":
            continue
        layer = LAYERS[layer_of(module)][0]
        assert path.name in paragraphs[layer], f"{module} is not in the README's {layer} layer"


def test_the_one_shot_core_leaves_the_heavy_parts_unimported() -> None:
    """What the lazy imports are for: a front end and a Session load without libvirt,
    prompt-toolkit, pluggy, the merging layer or completion (each comes when a command needs it)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from vshx.frontends import cli\n"
        "from vshx.shell.session import Session\n"
        "Session('test:///default')\n"
        "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('libvirt', 'prompt_toolkit', 'pluggy') or m.startswith(('vshx.merging', "
        "'vshx.completion', 'vshx.plans.runner')))))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT.parent
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == []


def test_a_local_merge_loads_no_module_only_others_need() -> None:
    """What a one-shot merge on a local URI imports (vshx.api, the runner, the chain lock, the
    step reasons in English) leaves out what only remote hosts (urllib), --plan-json, other
    languages (gettext), remote locks (subprocess) or a missing sudo user (getpass) need:
    each costs a one-shot ~1-3 ms of its ~100 ms floor (docs/benchmarks.md); nor pluggy, which
    a plugin's own commands do not need (vshx.pluginhost.markers); nor dataclasses, whose import
    (with inspect) and class building cost ~10 ms: the records on this path are NamedTuples."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import vshx.api, vshx.plans.runner, vshx.plans.lock, vshx.plans.blockjob\n"
        "import vshx.merging.target, vshx.merging.moments, vshx_plugins.commit\n"
        "from vshx.storage import host\n"
        "from vshx.spec import i18n, user\n"
        "host.for_uri('qemu:///system'); i18n._('x')\n"
        "print(' '.join(sorted(m for m in ('urllib.parse', 'gettext', 'subprocess', 'getpass',"
        " 'vshx.plans.plan_json', 'vshx.completion.inventory', 'pluggy', 'dataclasses',"
        " 'inspect') if m in sys.modules)))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("LANGUAGE", "LC_ALL", "LC_MESSAGES")}
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT.parent,
        env=dict(env, LANG="C.UTF-8", SUDO_USER="student"),
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == []


@pytest.mark.parametrize(
    ("env", "english"),
    [
        ({}, True),
        ({"LANG": "C.UTF-8"}, True),
        ({"LANG": "en_US.UTF-8"}, True),
        ({"LANG": "zh_CN.UTF-8"}, False),
        ({"LANG": "zh_CN.UTF-8", "LC_ALL": "C"}, True),
        ({"LANGUAGE": "en:zh_CN", "LANG": "C"}, False),
        ({"LANGUAGE": "C:zh_CN"}, True),
        ({"LC_MESSAGES": "POSIX", "LANG": "zh_CN.UTF-8"}, True),
    ],
)
def test_english_is_known_without_gettext(
    env: dict[str, str], english: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The languages are read in gettext's order (LANGUAGE, LC_ALL, LC_MESSAGES, LANG); a
    catalog is looked for only when one of them, before C, is not English."""
    from vshx.spec import i18n

    for variable in ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG"):
        monkeypatch.delenv(variable, raising=False)
    for variable, value in env.items():
        monkeypatch.setenv(variable, value)
    i18n.source_language.cache_clear()
    try:
        assert i18n.source_language() is english
    finally:
        i18n.source_language.cache_clear()
