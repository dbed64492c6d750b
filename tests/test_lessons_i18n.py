"""The reasons `--teach` and `explain` print under each step, in the user's language.

The messages are collected from the code (every module of vshx/ that imports vshx.spec.i18n,
scripts/lesson_messages.py), never from a list kept here; every reason a step carries comes
from vshx/plans/underneath.py, and each line those functions return, for every value of their
arguments, is translated in zh_CN.
"""

from __future__ import annotations

import ast
import gettext
import inspect
import itertools
import os
import re
import sys
import typing
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Lab, run_vshx

from vshx.plans import underneath
from vshx.spec import i18n

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
from lesson_messages import teach_messages, translated_modules  # noqa: E402

CJK = re.compile(r"[\u4e00-\u9fff]")


def zh_cn() -> gettext.NullTranslations:
    return gettext.translation(i18n.DOMAIN, i18n.LOCALE, languages=["zh_CN"])


def test_every_teach_reason_has_a_zh_cn_translation() -> None:
    """Each message vshx marks has a zh_CN text with the same {placeholders}."""
    assert ROOT / "vshx" / "plans" / "underneath.py" in translated_modules()
    found = teach_messages()
    assert len(found) > 30
    zh = zh_cn()
    missing = [m for m in found if not CJK.search(zh.gettext(m))]
    assert missing == []
    for message in found:
        words = set(re.findall(r"\{\w*\}", message))
        assert set(re.findall(r"\{\w*\}", zh.gettext(message))) == words, message


def choices(annotation: object) -> list[object]:
    """Every value worth trying for one parameter, from its type."""
    if annotation is bool:
        return [False, True]
    if annotation is int:  # libvirt versions on each side of what changes the reasons
        return [8_000_000, 9_000_000, 9_009_000]
    if annotation is str:
        return ["", "virsh -c qemu:///system snapshot-delete d s1"]
    if typing.get_origin(annotation) is typing.Literal:
        return list(typing.get_args(annotation))
    if annotation == (list[str] | None):
        return [None, ["sn1", "sn2"]]
    raise AssertionError(f"no values to try for {annotation!r}: teach the test this type")


def calls() -> Iterator[tuple[str, list[str]]]:
    """Each function of vshx.plans.underneath, called with every mix of its arguments."""
    for name, function in inspect.getmembers(underneath, inspect.isfunction):
        if function.__module__ != underneath.__name__:
            continue
        hints = typing.get_type_hints(function)
        params = list(inspect.signature(function).parameters.values())
        for values in itertools.product(*(choices(hints[p.name]) for p in params)):
            kwargs = {p.name: v for p, v in zip(params, values, strict=True)}
            said = function(**kwargs)
            assert isinstance(said, list), f"{name} returns lines"
            yield f"{name}({kwargs})", said


def test_every_line_a_step_teaches_is_translated(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under zh_CN, every line every reason function returns is Chinese (no f-string or
    literal slipped past gettext); in English the same calls give English."""
    english = dict(calls())
    assert len(english) > 10
    monkeypatch.setattr(i18n, "catalog", zh_cn)
    monkeypatch.setattr(i18n, "source_language", lambda: False)  # whatever LANG says
    for called, lines in calls():
        assert len(lines) == len(english[called]), called
        for line in lines:
            assert CJK.search(line), f"{called} teaches an untranslated line: {line}"
    for lines in english.values():
        assert not any(CJK.search(line) for line in lines)


def test_every_step_takes_its_reasons_from_underneath() -> None:
    """No `underneath=` argument anywhere in vshx/ or the built-in plugins holds its own text:
    the reasons live in vshx/plans/underneath.py, where gettext translates them."""
    offenders = []
    for path in [*(ROOT / "vshx").rglob("*.py"), *(ROOT / "plugins").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.keyword) or node.arg != "underneath":
                continue
            chosen = {  # an argument of underneath.X(...) chooses a reason (bitmap("add"))
                id(arg)
                for call in ast.walk(node.value)
                if isinstance(call, ast.Call)
                and isinstance(call.func, ast.Attribute)
                and isinstance(call.func.value, ast.Name)
                and call.func.value.id == "underneath"
                for arg in call.args
            }
            for inner in ast.walk(node.value):
                text = isinstance(inner, ast.JoinedStr) or (
                    isinstance(inner, ast.Constant) and isinstance(inner.value, str)
                )
                if text and id(inner) not in chosen:
                    offenders.append(f"{path.relative_to(ROOT)}:{node.value.lineno}")
    assert offenders == []


@pytest.mark.libvirt
def test_explain_and_teach_speak_the_users_language(lab: Lab) -> None:
    """LANG=zh_CN.UTF-8: the reasons are Chinese, the commands stay the very commands run."""
    words = ("explain", "commit", lab.name, "vda", "--active", "--base", "sn1", "--pivot")
    env = {k: v for k, v in os.environ.items() if k not in ("LANGUAGE", "LC_ALL", "LC_MESSAGES")}
    chinese = run_vshx(*words, env=dict(env, LANG="zh_CN.UTF-8"))
    english = run_vshx(*words, env=dict(env, LANG="C.UTF-8"))
    assert chinese.returncode == english.returncode == 0, chinese.stderr + english.stderr
    assert "#   --active：顶层是客户机正在写的层" in chinese.stdout
    assert "#   --active: the top is the layer the guest writes" in english.stdout
    commands = [
        [x for x in out.stdout.splitlines() if x.startswith("virsh ")] for out in (chinese, english)
    ]
    assert commands[0] == commands[1] and commands[0]
    words = ("explain", "snapshot-delete", lab.name, "sn2")  # --teach's "native:" note
    chinese = run_vshx(*words, env=dict(env, LANG="zh_CN.UTF-8"))
    english = run_vshx(*words, env=dict(env, LANG="C.UTF-8"))
    assert chinese.returncode == english.returncode == 0, chinese.stderr + english.stderr
    assert "# 原生命令：virsh -c " in chinese.stdout
    assert "does the same on this libvirt (>= 9.0)" in english.stdout
