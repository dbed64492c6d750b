"""Installed entry points of one group, read straight from the dist-info directories.

importlib.metadata costs ~40 ms to import here (email, zipfile, csv...), a large share of a
completion keystroke in a shell; the ``entry_points.txt`` files it reads are simple INI.
Only installed distributions on sys.path count; the current directory never does.
"""

from __future__ import annotations

import os
import sys
from typing import NamedTuple


class EntryPoint(NamedTuple):
    name: str
    value: str  # "package.module" or "package.module:attribute"
    distribution: str
    dist_info: str = ""  # the .dist-info (or .egg-info) directory that declared it

    def load(self) -> object:
        import importlib

        module_name, _, attr = self.value.partition(":")
        module = importlib.import_module(module_name.strip())
        for part in filter(None, attr.strip().split(".")):
            module = getattr(module, part)
        return module


def _parse(text: str, group: str, dist: str, dist_info: str = "") -> list[EntryPoint]:
    found, current = [], None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1].strip()
        elif current == group and "=" in line:
            name, value = (part.strip() for part in line.split("=", 1))
            found.append(EntryPoint(name, value, dist, dist_info))
    return found


def entry_points(group: str) -> list[EntryPoint]:
    """Entry points of ``group``; a distribution found twice counts once (first on sys.path)."""
    try:
        cwd: str | None = os.getcwd()
    except FileNotFoundError:  # the shell's directory was removed under it
        cwd = None
    seen: set[str] = set()
    result: list[EntryPoint] = []
    for base in sys.path:
        if base in ("", ".") or not os.path.isabs(base) and cwd is None:
            continue
        if os.path.abspath(base) == cwd or not os.path.isdir(base):
            continue
        try:
            names = sorted(os.listdir(base))
        except OSError:
            continue
        for entry in names:
            if not entry.endswith((".dist-info", ".egg-info")):
                continue
            dist = entry.rsplit(".", 1)[0].split("-")[0].lower().replace("_", "-")
            if dist in seen:
                continue
            seen.add(dist)
            where = os.path.join(base, entry)
            try:
                with open(os.path.join(where, "entry_points.txt"), encoding="utf-8") as fh:
                    result += _parse(fh.read(), group, dist, where)
            except OSError:
                continue
    return result
