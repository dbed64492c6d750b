"""The plugin host: a pluggy manager that loads the ``vshx`` entry-point group lazily, once.

Built-in plugins are found through the same entry-point group as third-party ones; the core
never imports a plugin by name.  ``VSHX_DISABLE_PLUGIN_AUTOLOAD=1`` skips entry points (for
debugging), and ``VSHX_DISABLE_PLUGINS=a,b`` blocks named ones.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING

from vshx.shell.spec import Command

if TYPE_CHECKING:
    import pluggy

ENTRY_POINT_GROUP = "vshx"


class CommandRegistry:
    """Commands by name and alias, filled by the vshx_register_commands hook."""

    def __init__(self) -> None:
        self._by_name: dict[str, Command] = {}
        self._names: dict[str, Command] = {}

    def register(self, command: Command) -> None:
        for word in (command.name, *command.aliases):
            if word in self._names:
                raise ValueError(f"command name {word!r} is registered twice")
            self._names[word] = command
        self._by_name[command.name] = command

    def get(self, word: str) -> Command | None:
        return self._names.get(word)

    def commands(self) -> list[Command]:
        return sorted(self._by_name.values(), key=lambda c: (c.group, c.name))

    def words(self) -> Iterable[str]:
        return self._names.keys()


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
        self.broken: list[str] = []

    @property
    def pm(self) -> pluggy.PluginManager:
        if self._pm is None:
            import pluggy

            from vshx.pluginhost import hookspecs

            self._pm = pluggy.PluginManager(hookspecs.PROJECT)
            self._pm.add_hookspecs(hookspecs)
        return self._pm

    def register_plugin(self, plugin: object, name: str | None = None) -> None:
        """Register one plugin object and collect the commands it contributes."""
        self.pm.register(plugin, name=name)
        impl = getattr(plugin, "vshx_register_commands", None)
        if impl is not None:
            impl(register=self.registry.register)

    def load_entry_points(self) -> None:
        """Load third-party and built-in plugins once; report a broken one in one line."""
        if self._loaded_entry_points:
            return
        self._loaded_entry_points = True
        if os.environ.get("VSHX_DISABLE_PLUGIN_AUTOLOAD"):
            return
        from vshx.pluginhost.entrypoints import entry_points

        blocked = {n.strip() for n in os.environ.get("VSHX_DISABLE_PLUGINS", "").split(",")}
        points = [ep for ep in entry_points(ENTRY_POINT_GROUP) if ep.name not in blocked]
        if self.specs_only:
            from vshx.pluginhost import spec_cache

            cached = spec_cache.load(points)
            if cached is not None:
                for command in cached:
                    self.registry.register(command)
                return
        self._load(points)
        if self.specs_only and not self.broken:
            from vshx.pluginhost import spec_cache

            plugin_commands = [c for c in self.registry.commands() if c.name not in self._core]
            spec_cache.save(points, plugin_commands)

    def _load(self, points: list) -> None:
        import pluggy

        pm = self.pm
        for ep in points:
            if pm.has_plugin(ep.name):
                continue
            try:
                self.register_plugin(ep.load(), name=ep.name)
                pm.check_pending()
            except (Exception, pluggy.PluginValidationError) as exc:  # never stop the shell
                self.broken.append(ep.name)
                print(f"warning: plugin {ep.name!r} failed to load: {exc}", file=sys.stderr)
                if pm.has_plugin(ep.name):
                    pm.unregister(name=ep.name)

    def command(self, word: str) -> Command | None:
        """Find a command, loading plugins only when the core does not know the word."""
        found = self.registry.get(word)
        if found is None and not self._loaded_entry_points:
            self.load_entry_points()
            found = self.registry.get(word)
        return found

    def all_commands(self) -> list[Command]:
        self.load_entry_points()
        return self.registry.commands()

    def command_finished(self, session: object, command: Command, status: int) -> None:
        if self._pm is not None:  # no plugin loaded: nobody listens
            self._pm.hook.vshx_command_finished(session=session, command=command, status=status)
