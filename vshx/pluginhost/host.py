"""The plugin host: a pluggy manager that loads the ``vshx`` entry-point group lazily, once.

Built-in plugins are found through the same entry-point group as third-party ones; the core
never imports a plugin by name.  ``VSHX_DISABLE_PLUGIN_AUTOLOAD=1`` skips entry points (for
debugging), and ``VSHX_DISABLE_PLUGINS=a,b`` blocks named ones.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from vshx.spec.kinds import CORE_COMPLETERS, chosen
from vshx.spec.spec import Command

if TYPE_CHECKING:
    import pluggy

    from vshx.plans.context import Context as Session
    from vshx.plans.plan import Plan
    from vshx.plans.target import Target
    from vshx.pluginhost.entrypoints import EntryPoint
    from vshx.spec.lesson import Lesson
    from vshx.spec.spec import Args

ENTRY_POINT_GROUP = "vshx"


class PluginError(Exception):
    """A plugin's contribution is unusable; the plugin is rejected as a whole."""


class CommandRegistry:
    """Commands by name and alias, filled by the vshx_register_commands hook."""

    def __init__(self) -> None:
        self._by_name: dict[str, Command] = {}
        self._names: dict[str, Command] = {}

    def clashes(self, commands: Iterable[Command]) -> list[str]:
        """Names or aliases among ``commands`` that are taken already or given twice."""
        seen, clashing = set(self._names), []
        for command in commands:
            for word in (command.name, *command.aliases):
                if word in seen:
                    clashing.append(word)
                seen.add(word)
        return clashing

    def register(self, command: Command) -> None:
        clashing = self.clashes([command])
        if clashing:
            raise PluginError(f"command name {clashing[0]!r} is registered twice")
        for word in (command.name, *command.aliases):
            self._names[word] = command
        self._by_name[command.name] = command

    def get(self, word: str) -> Command | None:
        return self._names.get(word)

    def commands(self) -> list[Command]:
        return sorted(self._by_name.values(), key=lambda c: (c.group, c.name))

    def words(self) -> Iterable[str]:
        return self._names.keys()


def check_references(command: Command, completers: Iterable[str]) -> None:
    """A misspelt option reference would silently do nothing: make it a plugin error."""
    keys = {opt.key for opt in command.all_options}
    known = set(completers)
    for opt in command.all_options:
        if opt.complete is not None and opt.complete not in known and chosen(opt.complete) is None:
            raise PluginError(
                f"{command.name} --{opt.name}: no completer {opt.complete!r} "
                f"(known: {', '.join(sorted(known))})"
            )
        for ref in (*opt.excludes, *opt.implies):
            if ref.replace("-", "_") not in keys:
                raise PluginError(f"{command.name} --{opt.name}: no option --{ref} to refer to")


class PluginHost:
    """Owns the pluggy manager; typed facade methods instead of ``pm.hook.*`` everywhere.

    The core's own commands are registered directly; pluggy and the entry points are loaded
    only when a word is not a core command (or help/completion wants every command), which
    keeps one-shot core commands fast.
    """

    def __init__(self, core_commands: Iterable[Command] = (), specs_only: bool = False) -> None:
        self.registry = CommandRegistry()
        for command in core_commands:
            self.registry.register(command)
        self._core = set(self.registry.words())
        self.specs_only = specs_only  # completion: specs may come from the spec cache
        self._pm: pluggy.PluginManager | None = None
        self._loaded_entry_points = False
        self._points: list[EntryPoint] | None = None
        self.completers: dict[str, Callable[..., Iterable[Any]]] = {}
        self.broken: list[str] = []
        self.owned_by: dict[str, str] = {}  # command word -> the entry point that registered it
        self.hook_users: list[str] = []  # plugins implementing more than registration hooks
        self._hooks_complete = False  # every plugin whose hooks must fire is loaded
        self._direct: dict[str, object] = {}  # plugins whose registration hooks were called
        # without pluggy (no installed plugin has other hooks); pluggy gets them when it loads

    @property
    def pm(self) -> pluggy.PluginManager:
        if self._pm is None:
            from vshx.pluginhost.manager import Manager

            self._pm = Manager()
            for name, plugin in self._direct.items():  # registered without pluggy before
                self._pm.register(plugin, name=name)
        return self._pm

    def _call_on(self, plugin: object, hook: str, **kwargs: Any) -> None:
        """Call one hook of one plugin through pluggy (tryfirst, wrappers, specname apply)."""
        others = [p for p in self.pm.get_plugins() if p is not plugin]
        self.pm.subset_hook_caller(hook, remove_plugins=others)(**kwargs)

    def register_plugin(self, plugin: object, name: str | None = None) -> None:
        """Register one plugin with its completers and commands: all of them or none."""
        pm = self.pm
        pm.register(plugin, name=name)
        try:
            pm.check_pending()
            completers: dict[str, Callable[..., Iterable[Any]]] = {}

            def add_completer(kind: str, function: Callable[..., Iterable[Any]]) -> None:
                if kind in CORE_COMPLETERS or kind in self.completers or kind in completers:
                    raise PluginError(f"completer {kind!r} is registered twice")
                completers[kind] = function

            self._call_on(plugin, "vshx_register_completers", register=add_completer)
            commands: list[Command] = []
            self._call_on(plugin, "vshx_register_commands", register=commands.append)
            clashing = self.registry.clashes(commands)
            if clashing:
                raise PluginError(f"command name {clashing[0]!r} is registered twice")
            for command in commands:
                check_references(command, (*CORE_COMPLETERS, *self.completers, *completers))
        except BaseException:
            pm.unregister(plugin)
            raise
        self.completers.update(completers)
        for command in commands:
            self.registry.register(command)
            for word in (command.name, *command.aliases):
                self.owned_by[word] = name or ""
        # lessons are asked for only by `lesson`, which loads every plugin then (lessons())
        registration = {
            "vshx_register_commands",
            "vshx_register_completers",
            "vshx_register_lessons",
        }
        hooks = {caller.name for caller in pm.get_hookcallers(plugin) or []}
        if name and hooks - registration:
            self.hook_users.append(name)

    def _entry_points(self) -> list[EntryPoint]:
        if self._points is None:
            from vshx.pluginhost.entrypoints import entry_points

            blocked = {n.strip() for n in os.environ.get("VSHX_DISABLE_PLUGINS", "").split(",")}
            points = [ep for ep in entry_points(ENTRY_POINT_GROUP) if ep.name not in blocked]
            # vshx's own plugins first (tox and pytest register theirs before any entry point,
            # though by import): a third-party plugin cannot take a built-in command's name,
            # whatever the order on sys.path
            self._points = sorted(points, key=lambda ep: ep.distribution != "vshx")
        return self._points

    def load_entry_points(self) -> None:
        """Load third-party and built-in plugins once; report a broken one in one line."""
        if self._loaded_entry_points:
            return
        self._loaded_entry_points = True
        if os.environ.get("VSHX_DISABLE_PLUGIN_AUTOLOAD"):
            return
        points = self._entry_points()
        if self.specs_only:
            from vshx.pluginhost import spec_cache

            cached = spec_cache.load(points)
            if cached is not None:
                for command in cached:
                    self.registry.register(command)
                return
        self._load(points)
        self._hooks_complete = True
        if not self.broken:
            from vshx.pluginhost import spec_cache

            plugin_commands = [c for c in self.registry.commands() if c.name not in self._core]
            spec_cache.save(points, plugin_commands, self.owned_by, self.hook_users)

    def _load(self, points: list[EntryPoint]) -> None:
        import pluggy

        pm = self.pm
        for ep in points:
            if pm.has_plugin(ep.name):  # a plugin registered without pluggy is in it now
                continue
            try:
                self.register_plugin(ep.load(), name=ep.name)
            except (Exception, pluggy.PluginValidationError) as exc:  # never stop the shell
                self.broken.append(ep.name)
                print(f"warning: plugin {ep.name!r} failed to load: {exc}", file=sys.stderr)

    def command(self, word: str) -> Command | None:
        """Find a command, loading plugins only when the core does not know the word: the one
        plugin that provides it (and those with other hooks) when the spec cache says which."""
        found = self.registry.get(word)
        if found is None and not self._loaded_entry_points:
            if not self.specs_only and self._load_only_for(word):
                found = self.registry.get(word)
                if found is not None:
                    return found
            self.load_entry_points()
            found = self.registry.get(word)
        return found

    def changes(self, word: str) -> bool | None:
        """Whether ``word``'s command changes things, known without loading plugin code: a
        core command's from its spec, a plugin's from the spec cache; None when neither says."""
        found = self.registry.get(word)
        if found is not None:
            return found.changes
        if os.environ.get("VSHX_DISABLE_PLUGIN_AUTOLOAD"):
            return None
        from vshx.pluginhost import spec_cache

        return (spec_cache.changing(self._entry_points()) or {}).get(word)

    def _load_only_for(self, word: str) -> bool:
        """Load the plugin that owns ``word`` plus every plugin with hooks beyond registration;
        False when the cache cannot say (then everything is loaded, as before)."""
        if os.environ.get("VSHX_DISABLE_PLUGIN_AUTOLOAD"):
            return False
        from vshx.pluginhost import spec_cache

        points = self._entry_points()
        index = spec_cache.owners(points)
        if index is None or word not in index[0]:
            return False
        owner, hook_users = index[0][word], index[1]
        if not hook_users and self._pm is None:
            ep = next(ep for ep in points if ep.name == owner)
            if self._register_directly(ep):
                self._hooks_complete = True  # no installed plugin has a hook to fire
                return True
        wanted = {owner, *hook_users}
        self._load([ep for ep in points if ep.name in wanted])
        self._hooks_complete = not self.broken
        return True

    def _register_directly(self, ep: EntryPoint) -> bool:
        """Call one plugin's registration hooks without pluggy (not imported, ~5 ms): only when
        they are plain ``hookimpl`` functions and no installed plugin implements other hooks
        (the spec cache says so).  False when pluggy must do it (then nothing was registered)."""
        from vshx.pluginhost import markers

        try:
            plugin = ep.load()
        except Exception:
            return False  # pluggy's path reports it as a broken plugin
        names = ("vshx_register_commands", "vshx_register_completers")
        found = [n for n in names if markers.options_of(plugin, n) is not None]
        if "vshx_register_commands" not in found or not all(
            markers.plain(markers.options_of(plugin, n)) for n in found
        ):
            return False
        completers: dict[str, Callable[..., Iterable[Any]]] = {}
        commands: list[Command] = []

        def add_completer(kind: str, function: Callable[..., Iterable[Any]]) -> None:
            if kind in CORE_COMPLETERS or kind in self.completers or kind in completers:
                raise PluginError(f"completer {kind!r} is registered twice")
            completers[kind] = function

        try:
            if "vshx_register_completers" in found:
                plugin.vshx_register_completers(register=add_completer)  # type: ignore[attr-defined]
            plugin.vshx_register_commands(register=commands.append)  # type: ignore[attr-defined]
            if self.registry.clashes(commands):
                return False
            for command in commands:
                check_references(command, (*CORE_COMPLETERS, *self.completers, *completers))
        except Exception:
            return False  # pluggy's path says what is wrong, in its one warning line
        self.completers.update(completers)
        for command in commands:
            self.registry.register(command)
            for word in (command.name, *command.aliases):
                self.owned_by[word] = ep.name
        self._direct[ep.name] = plugin
        return True

    def all_commands(self) -> list[Command]:
        self.load_entry_points()
        return self.registry.commands()

    def completer(self, kind: str) -> Callable[..., Iterable[Any]] | None:
        """A plugin's completion source; specs from the cache load the plugins' code here."""
        self.load_entry_points()
        if kind not in self.completers and self._pm is None:
            for ep in self._entry_points():  # the specs came from the cache: code is needed now
                try:
                    plugin = ep.load()
                    self.pm.register(plugin, name=ep.name)
                    self._call_on(plugin, "vshx_register_completers", register=self._add)
                except Exception:  # completion stays silent
                    continue
        return self.completers.get(kind)

    def _add(self, kind: str, function: Callable[..., Iterable[Any]]) -> None:
        self.completers.setdefault(kind, function)

    # -- typed facades over pm.hook -------------------------------------------------------------
    def preflight(self, session: Session, target: Target, plan: Plan) -> None:
        if not self._hooks_complete:  # a plan is about to run: every plugin gets its say
            self.load_entry_points()
        if self._pm is not None:
            self._pm.hook.vshx_preflight(session=session, target=target, plan=plan)

    def plan_ready(self, session: Session, command: Command, args: Args, plan: Plan) -> None:
        if not self._hooks_complete:
            self.load_entry_points()
        if self._pm is not None:
            self._pm.hook.vshx_plan_ready(session=session, command=command, args=args, plan=plan)

    def lessons(self) -> list[Lesson]:
        """Every plugin's lessons (all plugins are loaded for this), first registration of a
        name wins; vshx's own plugins register first."""
        self.load_entry_points()
        found: dict[str, Lesson] = {}

        def register(lesson: Lesson) -> None:
            found.setdefault(lesson.name, lesson)

        if self._pm is not None:
            for plugin in self._plugins_in_load_order():
                self._call_on(plugin, "vshx_register_lessons", register=register)
        return sorted(found.values(), key=lambda lesson: (lesson.order, lesson.name))

    def _plugins_in_load_order(self) -> list[object]:
        assert self._pm is not None
        order = [ep.name for ep in self._entry_points()]
        named = dict(self._pm.list_name_plugin())
        first = [named[n] for n in order if n in named]
        return first + [p for p in self._pm.get_plugins() if p not in first]

    def command_finished(self, session: Session, command: Command, status: int) -> None:
        if self._pm is not None:  # no plugin loaded: nobody listens
            self._pm.hook.vshx_command_finished(session=session, command=command, status=status)
