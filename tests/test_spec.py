"""The command spec parser: virsh-style positional-or-named arguments, errors with hints."""

import pytest

from vshx.errors import UsageError
from vshx.spec.spec import Command, Opt, non_negative_int, parse, walk

CMD = Command(
    "commit",
    "test",
    lambda s, a: None,
    (
        Opt("domain", "d", "domain", positional=True, required=True),
        Opt("path", "p", "disk", positional=True, required=True, aliases=("disk",)),
        Opt("base", "b", "ref"),
        Opt("bandwidth", "bw", "n", convert=non_negative_int),
        Opt("pivot", "p", implies=("active",), excludes=("keep-overlay",)),
        Opt("keep-overlay", "k", implies=("active",)),
        Opt("active", "a"),
        Opt("unsafe", "u", short="u"),
    ),
    aliases=("blockcommit",),
)


def test_positional_equals_named():
    assert parse(CMD, ["demo", "vda"]) == parse(CMD, ["--domain", "demo", "--path", "vda"])
    assert parse(CMD, ["--path", "vda", "demo"]).domain == "demo"


def test_alias_and_inline_value_and_short():
    args = parse(CMD, ["demo", "--disk=vda", "-u", "--base", "-odd.qcow2"])
    assert args.path == "vda" and args.unsafe and args.base == "-odd.qcow2"


def test_implies_and_conversion():
    args = parse(CMD, ["demo", "vda", "--pivot", "--bandwidth", "10"])
    assert args.active is True and args.bandwidth == 10 and args.dry_run is False


def test_double_dash_makes_words_positional():
    assert parse(CMD, ["--", "--weird", "vda"]).domain == "--weird"


@pytest.mark.parametrize(
    ("words", "message"),
    [
        (["demo"], "missing <disk>"),
        (["demo", "vda", "--bogus"], "has no option --bogus"),
        (["demo", "vda", "extra"], "unexpected argument"),
        (["demo", "vda", "--base"], "needs a value"),
        (["demo", "vda", "--bandwidth", "x"], "invalid value"),
        (["demo", "vda", "--bandwidth", "-3"], "invalid value"),
        (["demo", "vda", "--pivot", "--keep-overlay"], "cannot be used together"),
        (["demo", "vda", "--pivot=yes"], "takes no value"),
        (["demo", "vda", "--base", "a", "--base", "b"], "given twice"),
    ],
)
def test_usage_errors(words, message):
    with pytest.raises(UsageError) as info:
        parse(CMD, words)
    assert message in info.value.message
    assert info.value.exit_code == 2
    assert info.value.hint


def test_a_word_like_an_option_the_command_has_not_says_where_vshx_options_go():
    """nu12 #15: `commit D vda -q` blamed --bandwidth's value; the hint now says that vshx's
    own options go before the command.  A negative number is a value, not such a word."""
    with pytest.raises(UsageError) as info:
        parse(CMD, ["demo", "vda", "-q", "x"])
    assert "go before the command: vshx -q commit ..." in (info.value.hint or "")
    with pytest.raises(UsageError) as info:
        parse(CMD, ["demo", "vda", "--bandwidth", "-3"])
    assert "before the command" not in (info.value.hint or "")


def test_partial_walk_is_silent_and_knows_what_comes_next():
    state = walk(CMD, ["demo", "--bogus", "--base"], partial=True)
    assert state.expecting_value_of is not None and state.expecting_value_of.name == "base"
    state = walk(CMD, ["demo"], partial=True)
    assert state.next_positional is not None and state.next_positional.name == "path"
