"""Print the lessons' gettext messages as a .pot file (msgids only), for translators.

    python scripts/lesson_messages.py > lessons.pot
    msgmerge -U plugins/vshx_plugins/locale/zh_CN/LC_MESSAGES/vshx-lessons.po lessons.pot
    msgfmt -o plugins/vshx_plugins/locale/zh_CN/LC_MESSAGES/vshx-lessons.mo \\
        plugins/vshx_plugins/locale/zh_CN/LC_MESSAGES/vshx-lessons.po
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
        tree = ast.parse((PLUGINS / "vshx_plugins" / name).read_text())
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in ("_", "N_")
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                found.append(node.args[0].value)
    unique: list[str] = []
    for message in found:
        if message not in unique:
            unique.append(message)
    return unique


def main() -> None:
    print('msgid ""\nmsgstr ""\n"Content-Type: text/plain; charset=UTF-8\\n"\n')
    for message in messages():
        print(f'msgid {json.dumps(message, ensure_ascii=False)}\nmsgstr ""\n')


if __name__ == "__main__":
    main()
