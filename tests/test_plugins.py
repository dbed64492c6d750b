"""The plugin host: entry points, lazy loading, broken plugins, and documented hooks."""

from __future__ import annotations

import inspect
import io
import os
import re
from pathlib import Path

from conftest import run_vshx

from vshx.pluginhost import hookspecs
from vshx.pluginhost.host import PluginHost
from vshx.pluginhost.markers import hookimpl
from vshx.shell.session import Session
from vshx.spec.spec import Command, Opt

README = Path(__file__).resolve().parents[1] / "README.md"


def hook_names() -> list[str]:
    return [
        n for n, f in inspect.getmembers(hookspecs, inspect.isfunction) if n.startswith("vshx_")
    ]


def test_every_hook_is_documented_in_the_readme():
    text = README.read_text()
    assert hook_names(), "no hooks found"
    for name in hook_names():
        assert re.search(rf"`{name}\(", text), f"{name} is not documented in README.md"
        assert getattr(hookspecs, name).__doc__, f"{name} has no docstring"


class Recorder:
    """A plugin written exactly as a third party would, exercising every hook."""

    def __init__(self) -> None:
        self.finished: list[tuple[str, int]] = []

    @hookimpl
    def vshx_register_commands(self, register):
        register(
            Command(
                "hello",
                "say hello",
                lambda s, a: s.print(f"hello {a.who}"),
                (Opt("who", "whom", "name", positional=True, required=True),),
            )
        )

    @hookimpl
    def vshx_command_finished(self, session, command, status):
        self.finished.append((command.name, status))


def test_every_hook_is_called():
    out = io.StringIO()
    host = PluginHost()
    plugin = Recorder()
    host.register_plugin(plugin, name="recorder")
    session = Session("test:///default", out=out, err=io.StringIO(), host=host)
    assert session.execute("hello world") == 0
    assert out.getvalue() == "hello world\n"
    assert plugin.finished == [("hello", 0)]


def test_builtin_plugins_come_from_the_entry_point_group():
    host = PluginHost()
    host.load_entry_points()
    names = {c.name for c in host.registry.commands()}
    assert "lab-create" in names
    assert not host.broken


def test_autoload_can_be_disabled(monkeypatch):
    monkeypatch.setenv("VSHX_DISABLE_PLUGIN_AUTOLOAD", "1")
    host = PluginHost()
    host.load_entry_points()
    assert host.command("lab-create") is None


def test_broken_plugin_is_one_line_and_the_shell_still_starts(tmp_path):
    """Install a real broken distribution into a path on sys.path and run vshx."""
    dist = tmp_path / "site"
    info = dist / "brokenplug-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: brokenplug\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[vshx]\nbroken = brokenplug_missing_module\n")
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(dist), os.environ.get("PYTHONPATH", "")])
    )
    proc = run_vshx("help", env=env)
    assert proc.returncode == 0
    warnings = [line for line in proc.stderr.splitlines() if "broken" in line]
    assert len(warnings) == 1 and warnings[0].startswith("warning: plugin 'broken'")
    assert "lab-create" in proc.stdout and "Traceback" not in proc.stderr


def test_plugins_are_not_loaded_from_the_current_directory(tmp_path):
    (tmp_path / "vshx_plugins").mkdir()
    (tmp_path / "vshx_plugins" / "__init__.py").write_text("raise SystemExit('hijacked')\n")
    proc = run_vshx("help", cwd=str(tmp_path))
    assert proc.returncode == 0 and "hijacked" not in proc.stderr + proc.stdout


def test_completion_spec_cache_is_derived_and_refreshed(tmp_path, monkeypatch):
    import json

    from vshx.pluginhost import spec_cache
    from vshx.shell.builtins import BUILTINS

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    first = PluginHost(BUILTINS, specs_only=True)
    first.load_entry_points()  # no cache yet: plugins load, the cache is written
    assert first._pm is not None
    cached = json.loads(Path(spec_cache.cache_path()).read_text())
    assert "commit" in {c["name"] for c in cached["commands"]}
    second = PluginHost(BUILTINS, specs_only=True)
    second.load_entry_points()  # from the cache: no pluggy, same options
    assert second._pm is None
    assert [o.name for o in second.command("commit").options] == [
        o.name for o in first.command("commit").options
    ]
    cached["fingerprint"][-1][1] += 1  # a distribution's RECORD changed
    Path(spec_cache.cache_path()).write_text(json.dumps(cached))
    third = PluginHost(BUILTINS, specs_only=True)
    third.load_entry_points()
    assert third._pm is not None, "a stale cache must not be used"


def test_spec_cache_fingerprint_follows_record_and_shared_modules(tmp_path, monkeypatch):
    """Any module of a plugin's distribution counts, not only the entry-point modules: an
    option added to a shared module (or a reinstall that rewrites RECORD) reaches completion."""
    from vshx.pluginhost import spec_cache
    from vshx.pluginhost.entrypoints import EntryPoint

    site, src = tmp_path / "site", tmp_path / "src"
    info = site / "demo-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "top_level.txt").write_text("demo_pkg\n")
    (info / "RECORD").write_text("demo_pkg/__init__.py,sha256=abc,1\n")
    (src / "demo_pkg" / "shared").mkdir(parents=True)
    (src / "demo_pkg" / "__init__.py").write_text("")
    (src / "demo_pkg" / "shared" / "options.py").write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(src))  # imported from elsewhere than installed: editable
    points = [EntryPoint("demo", "demo_pkg.plugin", "demo", str(info))]
    before = spec_cache.fingerprint(points)
    (info / "RECORD").write_text("demo_pkg/__init__.py,sha256=abd,1\n")
    after_record = spec_cache.fingerprint(points)
    assert after_record != before
    shared = src / "demo_pkg" / "shared" / "options.py"
    stat = shared.stat()
    os.utime(shared, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert spec_cache.fingerprint(points) != after_record
    (src / "demo_pkg" / "shared" / "new.py").write_text("")
    assert spec_cache.fingerprint(points) != after_record


def test_a_command_loads_only_its_plugin_and_those_with_other_hooks(tmp_path, monkeypatch):
    from vshx.shell.builtins import BUILTINS

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    first = PluginHost(BUILTINS)
    assert first.command("commit") is not None  # no cache yet: everything loads, cache written
    assert {name for name, _ in first.pm.list_name_plugin()} >= {"commit", "pull", "lab"}
    second = PluginHost(BUILTINS)
    assert second.command("blockcommit").name == "commit"
    assert second._pm is None, "no installed plugin has other hooks: pluggy is not needed"
    assert [name for name, _ in second.pm.list_name_plugin()] == ["commit"]
    assert "pull" in {c.name for c in second.all_commands()}  # help still sees every command
    assert [c.name for c in second.all_commands()].count("commit") == 1


def test_a_plugin_marked_with_pluggys_own_marker_still_loads(tmp_path, monkeypatch):
    """vshx's ``hookimpl`` is its own (no pluggy import); pluggy's marker works as well."""
    import pluggy

    class Legacy:
        @pluggy.HookimplMarker("vshx")
        def vshx_register_commands(self, register):
            register(Command("legacy-hello", "say hello", lambda s, a: None))

    host = PluginHost()
    host.register_plugin(Legacy(), name="legacy")
    assert host.command("legacy-hello") is not None


def test_plugins_with_other_hooks_load_with_any_command(tmp_path, monkeypatch):
    from vshx.shell.builtins import BUILTINS

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    first = PluginHost(BUILTINS)
    first.register_plugin(Recorder(), name="recorder")
    first.hook_users.append("lab")  # as if lab implemented vshx_plan_ready
    first.load_entry_points()
    second = PluginHost(BUILTINS)
    second.command("pull")
    assert {name for name, _ in second.pm.list_name_plugin()} == {"pull", "lab"}
