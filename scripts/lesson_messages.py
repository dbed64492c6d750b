"""Print gettext messages as a .pot file (msgids only), for translators.

The lessons' (domain ``vshx-lessons``, the lesson plugin's catalog):

    python scripts/lesson_messages.py > lessons.pot
    msgmerge -U plugins/vshx_plugins/locale/zh_CN/LC_MESSAGES/vshx-lessons.po lessons.pot
    msgfmt -o plugins/vshx_plugins/locale/zh_CN/LC_MESSAGES/vshx-lessons.mo \\
        plugins/vshx_plugins/locale/zh_CN/LC_MESSAGES/vshx-lessons.po

vshx's own (domain ``vshx``: the reasons --teach and explain print under each step), found
in every module of vshx/ that imports ``vshx.spec.i18n``:

    python scripts/lesson_messages.py --domain vshx > vshx.pot
    msgmerge -U vshx/i18n/zh_CN/LC_MESSAGES/vshx.po vshx.pot
    msgfmt -o vshx/i18n/zh_CN/LC_MESSAGES/vshx.mo vshx/i18n/zh_CN/LC_MESSAGES/vshx.po
"""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PLUGINS = ROOT / "plugins"
CODE = ("lesson.py", "lesson_check.py")


def messages() -> list[str]:
    """Every lesson text, hint and solution comment, then every message the code marks."""
    sys.path.insert(0, str(PLUGINS))
    sys.path.insert(0, str(ROOT))
    from vshx_plugins.lessons_builtin import LESSONS

    found: list[str] = []
    for lesson in LESSONS:
        found += [lesson.title, lesson.task, *lesson.hints]
        found += [line.lstrip("# ") for line in lesson.solution if line.startswith("#")]
        found += [hint for _kind, hint in lesson.mistakes]
        if lesson.achieved:
            found.append(lesson.achieved)
    for name in CODE:
        found += marked(PLUGINS / "vshx_plugins" / name)
    return unique(found)


def marked(path: Path) -> list[str]:
    """The constant messages a module passes to ``_`` or ``N_``, in order."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("_", "N_")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.append(node.args[0].value)
    return found


def translated_modules() -> list[Path]:
    """The modules of vshx/ that use vshx's catalog (import from ``vshx.spec.i18n``)."""
    found = []
    for path in sorted((ROOT / "vshx").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "vshx.spec.i18n":
                found.append(path)
                break
    return found


def teach_messages() -> list[str]:
    """vshx's own messages: the reasons --teach and explain print under each step."""
    return unique([m for path in translated_modules() for m in marked(path)])


def unique(found: list[str]) -> list[str]:
    kept: list[str] = []
    for message in found:
        if message not in kept:
            kept.append(message)
    return kept


def main() -> None:
    chosen = teach_messages() if sys.argv[1:] == ["--domain", "vshx"] else messages()
    print('msgid ""\nmsgstr ""\n"Content-Type: text/plain; charset=UTF-8\\n"\n')
    for message in chosen:
        print(f'msgid {json.dumps(message, ensure_ascii=False)}\nmsgstr ""\n')


if __name__ == "__main__":
    main()
