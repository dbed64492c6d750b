"""The completion engine in-process, table-driven, like virsh's own completion test data.

The inventory here is a small in-memory stand-in (pure logic: what kind of word goes where,
quoting, partially typed options); the real daemon is used in test_complete_shells.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from vshx.completion.engine import Engine, backslash_quoted, inside_quote, quote_candidate
from vshx.completion.inventory import DomainEntry
from vshx.pluginhost.host import PluginHost
from vshx.shell.builtins import BUILTINS
from vshx.storage.chain import Chain, Layer


class FakeInventory:
    def domains(self):
        return [
            DomainEntry("web", 3, "7c1b0b0e-0000-4000-8000-000000000001", "running"),
            DomainEntry("db", -1, "7c1b0b0e-0000-4000-8000-000000000002", "shut off"),
            DomainEntry("web-old", -1, "7c1b0b0e-0000-4000-8000-000000000003", "shut off"),
        ]

    def disks(self, domain):
        return [("vda", f"/images/{domain}/sn2.qcow2"), ("vdb", "/images/data.raw")]

    def chain(self, domain, disk):
        names = ["sn2.qcow2", "sn1.qcow2", "base.qcow2"]
        return Chain(
            [
                Layer(
                    f"/images/{domain}/{n}", "qcow2", i, libvirt_index=i + 1, virtual_size=1 << 30
                )
                for i, n in enumerate(names)
            ],
            domain=domain,
            disk=disk,
            live=True,
        )

    def image_chain(self, path):
        return self.chain("img", "image")

    def snapshots(self, domain):
        return ["sn1", "sn2"]


@pytest.fixture(scope="module")
def engine() -> Engine:
    host = PluginHost(BUILTINS)
    host.load_entry_points()
    return Engine(host, FakeInventory())


def values(engine: Engine, line: str) -> list[str]:
    return [c.value for c in engine.complete(line).candidates]


TABLE = [
    ("chai", ["chain"]),
    ("blockc", ["blockcommit"]),
    ("", None),  # every command; checked below
    ("chain ", ["web", "db", "web-old"]),  # running first
    ("chain w", ["web", "web-old"]),
    ("chain 3", ["3"]),  # an id, as virsh does when no name matches
    ("chain 7c1b0b0e-0000-4000-8000-000000000002"[:10], None),
    ("chain web ", ["vda", "vdb"]),
    ("commit web vda --base ", ["sn1.qcow2", "vda[2]", "base.qcow2", "vda[3]"]),
    ("commit web vda --base sn1", ["sn1.qcow2"]),
    ("lesson st", ["start"]),  # a plugin's fixed words (nu13 #4), from its spec alone
    ("lesson check safe", ["safe-rebase"]),
    ("commit web vda --top vda[", ["vda[1]", "vda[2]"]),
    ("commit web vda --base sn1 --top ", ["sn2.qcow2", "vda[1]"]),
    ("commit web vda --top sn1 --base ", ["base.qcow2", "vda[3]"]),
    ("commit --path vda --domain web --base b", ["base.qcow2"]),
    ("commit web vda --piv", ["--pivot"]),
    ("commit web vda --keep-overlay --pi", []),
    ("commit web vda --base x --b", ["--bandwidth", "--bytes", "--background"]),
    ("list --", ["--all", "--inactive", "--name", "--json", "--dry-run", "--teach"]),
    ("list --all --", ["--name", "--json", "--dry-run", "--teach"]),
    ("connect --", ["--uri"]),
    ("help com", ["commit", "completion"]),
    ("connect q", ["qemu:///system", "qemu:///session"]),
    (
        "rebase --domain web --path vda --backing ",
        ["sn2.qcow2", "vda[1]", "sn1.qcow2", "vda[2]", "base.qcow2", "vda[3]"],
    ),
    ("rebase -F q", ["qcow2"]),
    ("list; chain d", ["db"]),
    ("frobnicate ", []),
]


@pytest.mark.parametrize(("line", "expected"), [t for t in TABLE if t[1] is not None])
def test_table(engine, line, expected):
    assert values(engine, line) == expected


def test_every_command_and_alias_when_nothing_typed(engine):
    found = values(engine, "")
    for word in (
        "commit",
        "blockcommit",
        "pull",
        "blockpull",
        "rebase",
        "snapshot-cleanup",
        "chain",
        "list",
        "lab-create",
        "quit",
    ):
        assert word in found


def test_uuid_when_no_name_matches(engine):
    assert values(engine, "chain 7c1b0b0e-0000-4000-8000-00000000000") == [
        f"7c1b0b0e-0000-4000-8000-00000000000{i}" for i in (1, 2, 3)
    ]


def test_mutually_exclusive_options_are_not_offered(engine):
    assert "--keep-overlay" not in values(engine, "commit web vda --pivot --")
    assert "--pivot" not in values(engine, "commit web vda --keep-overlay --")


def test_meta_shows_state_active_file_and_layer_position(engine):
    metas = {c.value: c.meta for c in engine.complete("chain ").candidates}
    assert metas["web"] == "running" and metas["db"] == "shut off"
    metas = {c.value: c.meta for c in engine.complete("chain web ").candidates}
    assert metas["vda"] == "/images/web/sn2.qcow2"
    metas = {c.value: c.meta for c in engine.complete("commit web vda --base ").candidates}
    assert metas["base.qcow2"].startswith("base, 1.0 GiB")
    assert metas["vda[2]"] == "sn1.qcow2, 1 below active"


def test_image_paths_quoted_with_directories_and_images_first(engine, tmp_path: Path):
    (tmp_path / "my disk's.qcow2").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("")
    (tmp_path / "sub dir").mkdir()
    result = engine.complete(f"chain {tmp_path}/")
    assert [c.value for c in result.candidates] == [
        f"{tmp_path}/sub dir/",
        f"{tmp_path}/my disk's.qcow2",
    ]
    assert result.quoted() == [f"'{tmp_path}/sub dir'/", f"'{tmp_path}/my disk'\"'\"'s.qcow2'"]
    typed = f"rebase '{tmp_path}/my d"
    result = engine.complete(typed)
    assert result.prefix == f"{tmp_path}/my d" and typed[result.start :] == f"'{tmp_path}/my d"
    assert [c.value for c in result.candidates] == [f"{tmp_path}/my disk's.qcow2"]


def test_backslash_quoting_reads_back_as_the_name():
    """bash's candidates: every special character behind a backslash; sh reads each back as
    the very name (checked by sh itself), and what candidates share stays a prefix of each."""
    import subprocess

    names = ["vda[2]", "/a b/it's.qcow2", "$(touch x)", "~user", "a!b;c&d|e", "é.qcow2", "-x"]
    for name in names:
        quoted = backslash_quoted(name)
        said = subprocess.run(["sh", "-c", f"printf %s {quoted}"], capture_output=True, text=True)
        assert said.stdout == name, (name, quoted)
    assert backslash_quoted("vda[2]").startswith(backslash_quoted("vda["))


def test_names_inside_an_opened_quote_read_back_as_the_name():
    """Completed inside an opened quote (atk11 F3), bash closes the quote after the candidate:
    sh reads the quoted word back as the very name; a name that cannot be written inside that
    quote is not offered."""
    import subprocess

    names = ["my vm", "a$b", "x`id`", 'a"b', "a\\b", "é vm", "it's", "a!b"]
    for quote in ('"', "'"):
        for name in names:
            inside = inside_quote(name, quote)
            if inside is None:
                assert (quote == "'" and "'" in name) or (quote == '"' and "!" in name)
                continue
            word = f"{quote}{inside}{quote}"
            said = subprocess.run(["sh", "-c", f"printf %s {word}"], capture_output=True, text=True)
            assert said.stdout == name, (quote, name, word)


def test_quote_candidate_keeps_directories_open():
    assert quote_candidate("/a b/") == "'/a b'/"
    assert quote_candidate("/plain/") == "/plain/"
    assert quote_candidate("$(x)") == "'$(x)'"


def test_shell_snapshot_round_trips_even_an_empty_host(tmp_path, monkeypatch):
    from vshx.completion.inventory import Inventory

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    # the snapshot is valid for SHELL_CACHE_TTL seconds: a loaded machine must not outlast it
    monkeypatch.setattr("vshx.completion.inventory.SHELL_CACHE_TTL", 3600.0)

    calls = []

    class NoDomains:
        def listAllDomains(self, flags):
            calls.append(flags)
            return []

    path = "inventory.json"  # a name in vshx's cache directory
    assert Inventory(lambda: NoDomains(), persist=path).domains() == []
    assert Inventory(lambda: NoDomains(), persist=path).domains() == []
    assert len(calls) == 1, "the second process must answer from the snapshot"


def test_every_core_completer_name_has_a_provider(engine):
    from vshx.spec.kinds import CORE_COMPLETERS

    assert set(engine.providers) == set(CORE_COMPLETERS)


def test_every_builtin_option_reference_is_valid(capsys: pytest.CaptureFixture[str]):
    """A bad reference drops its whole plugin at load time (a warning, not an exception), so
    looking only at the commands that did load could never fail: check that every built-in
    plugin loaded and registered commands, then that the check itself bites."""
    from vshx.pluginhost.entrypoints import entry_points
    from vshx.pluginhost.host import ENTRY_POINT_GROUP, PluginError, check_references
    from vshx.spec.kinds import CORE_COMPLETERS

    builtins = {ep.name for ep in entry_points(ENTRY_POINT_GROUP) if ep.distribution == "vshx"}
    assert {"commit", "pull", "rebase", "lab"} <= builtins
    host = PluginHost(BUILTINS)
    host.load_entry_points()
    assert not builtins & set(host.broken), capsys.readouterr().err
    lessons_only = {"lessons"}  # registers exercises (vshx_register_lessons), no command
    commanding = builtins - lessons_only
    assert commanding <= set(host.owned_by.values()), "a built-in plugin registered no command"
    completed = []
    for command in host.registry.commands():
        check_references(command, (*CORE_COMPLETERS, *host.completers))
        if any(opt.complete for opt in command.all_options):
            completed.append(command)
    assert completed, "no built-in option names a completer"
    for command in completed:  # the check is not a no-op: without the completers it refuses
        with pytest.raises(PluginError, match="no completer"):
            check_references(command, ())


def test_a_global_options_value_completes_as_that_value(engine, tmp_path: Path):
    """`vshx -c <Tab>` offers URIs, `vshx -f <Tab>` files, as shell completion sees the line
    (nu12 #7: the command names were offered); after the value, the command names again."""

    def shell(line: str) -> list[str]:
        return [c.value for c in engine.complete(line, skip_globals=True).candidates]

    assert shell("-c ") == ["qemu:///system", "qemu:///session", "test:///default"]
    assert shell("--connect q") == ["qemu:///system", "qemu:///session"]
    (tmp_path / "batch.vshx").write_text("list\n")
    assert shell(f"-q -f {tmp_path}/ba") == [f"{tmp_path}/batch.vshx"]
    assert "chain" in shell("-c qemu:///system ")
    assert shell("-c qemu:///system chai") == ["chain"]
