"""The line lexer: quoting, comments and separators as in sh, never running one."""

import pytest

from vshx.errors import UsageError
from vshx.spec.lexer import echoed, split_line

CASES = [
    ("list --all", [["list", "--all"]]),
    ("list --all; chain demo vda", [["list", "--all"], ["chain", "demo", "vda"]]),
    ("chain 'a b.qcow2'", [["chain", "a b.qcow2"]]),
    ('chain "it\'s \\"x\\".qcow2"', [["chain", 'it\'s "x".qcow2']]),
    ("chain disk#1.qcow2 # a comment", [["chain", "disk#1.qcow2"]]),
    ("# only a comment", []),
    ("rebase x --backing ''", [["rebase", "x", "--backing", ""]]),
    ("chain a\\ b", [["chain", "a b"]]),
    ("chain '$(rm -rf /)'", [["chain", "$(rm -rf /)"]]),
    ("a ';' b", [["a", ";", "b"]]),
    (";;list;", [["list"]]),
]


@pytest.mark.parametrize(("line", "expected"), CASES)
def test_split(line, expected):
    assert split_line(line).commands == expected


def test_open_quote_is_a_usage_error():
    with pytest.raises(UsageError):
        split_line("chain 'open")


def test_partial_reports_open_quote_and_last_word():
    lexed = split_line("chain 'my fi", partial=True)
    assert lexed.commands == [["chain", "my fi"]]
    assert lexed.open_quote == "'"
    assert lexed.ends_in_word


def test_partial_keeps_empty_last_command():
    lexed = split_line("list; ", partial=True)
    assert lexed.commands[-1] == []


# virsh's own reading of a one-argument command string (vshCommandStringGetArg), where it
# differs from sh; `virsh 'echo --shell ...'` printed these words (libvirt 9.0)
VIRSH_CASES = [
    ("domstate d; list", [["domstate", "d"], ["list"]]),
    ("list\ndomstate d", [["list"], ["domstate", "d"]]),
    ('echo "a\\b" "c\\"d"', [["echo", "ab", 'c"d']]),
    ("echo 'a\\b'", [["echo", "a\\b"]]),
    ("echo a \\\n b", [["echo", "a", "b"]]),
    ("echo a\\\nb", [["echo", "ab"]]),
    ('echo "a\\\nb"', [["echo", "ab"]]),
    ("echo ~ ~/x", [["echo", "~", "~/x"]]),
    ("echo a\rb", [["echo", "a\rb"]]),
    ("echo 'open", [["echo", "open"]]),
    ("echo a # rest; not run\nlist", [["echo", "a"], ["list"]]),
    ("'#x' y; list", [["list"]]),
    ("echo $(touch x) `id`", [["echo", "$(touch", "x)", "`id`"]]),
]


@pytest.mark.parametrize(("line", "expected"), VIRSH_CASES)
def test_split_as_virsh(line, expected):
    assert split_line(line, virsh=True).commands == expected


@pytest.mark.parametrize("line", ["domstate d\\", 'echo "open'])
def test_virsh_refusals(line):
    with pytest.raises(UsageError):
        split_line(line, virsh=True)


def test_one_word_is_a_command_string_only_with_a_blank_or_semicolon():
    from vshx.frontends.cli import is_command_string

    assert is_command_string(["domstate d"]) and is_command_string(["list;list"])
    assert is_command_string(["list\nlist"])
    assert not is_command_string(["list"]) and not is_command_string(["domstate", "d e"])


@pytest.mark.parametrize(
    ("line", "echo"),
    [
        # atk8 F7: the trailing comment was echoed as if it were part of the command
        ("snapshot-cleanup vshx-d        # may fail without stopping", "+ snapshot-cleanup vshx-d"),
        ("echo 'a b' \"c\"; list --all # x", "+ echo 'a b' c; list --all"),
        ("echo disk#1 '$HOME'", "+ echo 'disk#1' '$HOME'"),
        # nu12 #10: a pasted check's pipeline echoed as it runs, not with '|' as a word
        (
            "virsh x | sha256sum | grep -qxF -- 'a  -'",
            "+ virsh x | sha256sum | grep -qxF -- 'a  -'",
        ),
    ],
)
def test_the_x_echo_shows_the_commands_that_run_and_reads_back_the_same(line, echo):
    assert echoed(line) == echo
    assert split_line(echo[2:]).commands == split_line(line).commands
