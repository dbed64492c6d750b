"""A batch --dry-run's gathered script (frontends/gathered.py): one shebang, first; the later
lines' checks at the top; vshx's stop as the script's exit."""

from __future__ import annotations

from vshx.frontends.gathered import script
from vshx.plans.plan import Step


def test_the_shebang_is_first_and_the_checks_come_before_every_line():
    gathered = "# a read line's answer\n#!/bin/sh\n# vshx plan: commit\ntrue\n"
    check = Step("check: the host", ["test", "-e", "/"], changes=False)
    text = script(gathered, [check], 0)
    assert text.startswith("#!/bin/sh\n") and text.count("#!/bin/sh") == 1
    assert text.index("test -e /") < text.index("# a read line's answer")
    assert text.index("test -e /") < text.index("true")
    assert "exit" not in text


def test_where_vshx_stopped_the_script_exits_with_its_status():
    text = script("#!/bin/sh\ntrue\n", [], 2)
    assert text.startswith("#!/bin/sh\n") and text.endswith("exit 2\n")
    assert script("# only comments\n", [], None) == "# only comments\n"  # interrupted: as it was
