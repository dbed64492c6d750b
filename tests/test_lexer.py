"""The line lexer: quoting, comments and separators as in sh, never running one."""

import pytest

from vshx.errors import UsageError
from vshx.spec.lexer import split_line

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
