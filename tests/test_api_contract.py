"""The plugin contract: vshx.api's names match CHANGELOG.md, each is documented, the built-in
plugins import nothing else from vshx, and each hook says when it appeared (no libvirt)."""

from __future__ import annotations

import ast
import inspect
import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

from conftest import run_vshx

from vshx import api
from vshx.pluginhost import hookspecs, markers

ROOT = Path(__file__).resolve().parent.parent
API_LINE = re.compile(r"^- API (added|removed): (.*?)(?=^\S|^- |\Z)", re.M | re.S)


def surface() -> set[str]:
    """``api.__all__`` plus ``namespace.member`` for each namespace class vshx.api declares."""
    names = set(api.__all__)
    for name in api.__all__:
        value = getattr(api, name)
        if inspect.isclass(value) and value.__module__ == "vshx.api":
            names |= {f"{name}.{m}" for m in vars(value) if not m.startswith("_")}
    return names


def changelog_surface(text: str) -> set[str]:
    """Replay every ``- API added:`` / ``- API removed:`` line, oldest version first."""
    sections = re.split(r"^## ", text, flags=re.M)[1:]
    names: set[str] = set()
    for section in reversed(sections):
        for kind, body in API_LINE.findall(section):
            listed = re.findall(r"`([^`]+)`", body)
            if kind == "added":
                assert not names & set(listed), f"added twice: {sorted(names & set(listed))}"
                names |= set(listed)
            else:
                assert set(listed) <= names, f"removed but never added: {set(listed) - names}"
                names -= set(listed)
    return names


def test_changelog_names_every_api_change():
    recorded = changelog_surface((ROOT / "CHANGELOG.md").read_text())
    offered = surface()
    assert offered - recorded == set(), "add an `API added:` line to CHANGELOG.md for these"
    assert recorded - offered == set(), "add an `API removed:` line to CHANGELOG.md for these"


def test_changelog_replay_catches_an_unrecorded_name():
    text = "## 2.0\n\n- API added: `b`\n\n## 1.0\n\n- API added: `a`, `c`\n- API removed: `c`\n"
    assert changelog_surface(text) == {"a", "b"}


def test_every_api_name_is_documented():
    doc = api.__doc__ or ""
    for name in api.__all__:
        value = getattr(api, name)
        if inspect.isclass(value) and value.__module__ == "vshx.api":
            members = [m for m in vars(value) if not m.startswith("_")]
            for member in members:
                assert f"``{member}``" in (value.__doc__ or ""), f"{name}.{member} undocumented"
            assert f"``{name}``" in doc, name
        else:
            assert f"``{name}``" in doc, f"{name} is not in vshx.api's table"


def test_builtin_plugins_import_only_the_api():
    for path in sorted((ROOT / "plugins" / "vshx_plugins").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                modules = [node.module]
            elif isinstance(node, ast.Import):
                modules = [a.name for a in node.names]
            else:
                continue
            for module in modules:
                if module == "vshx" or module.startswith("vshx."):
                    assert module == "vshx.api", f"{path.name} imports {module}"


def test_every_hook_says_when_it_appeared():
    hooks = [f for name, f in vars(hookspecs).items() if name.startswith("vshx_") and callable(f)]
    assert len(hooks) >= 5
    for hook in [*hooks, markers.commands_hook, markers.hookimpl]:
        assert re.search(r"New in \d+\.\d+\.", hook.__doc__ or ""), hook.__name__


def test_the_package_ships_type_information():
    assert (ROOT / "vshx" / "py.typed").is_file()
    assert '"vshx" = ["py.typed"]' in (ROOT / "pyproject.toml").read_text()


def test_version_is_the_installed_distributions_and_read_only_when_asked():
    assert run_vshx("--version").stdout.strip() == version("vshx")
    probe = "import sys, vshx.frontends.cli; print('importlib.metadata' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr
