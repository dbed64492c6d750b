"""vshx's own list, domblklist and snapshot-list print what virsh 9.0 prints, line for line
(outside tester atk6, findings 1 and 1b): virsh's order (snapshots by name unless
--topological, libvirt's topological order with it, the --tree drawing), and the empty line
virsh ends every command with, after an empty list and after a failure too, not under -q.
vshx's documented extras stay: the Parent and "Moment on each disk" columns, the current
snapshot's ``*``, each tree line's moments.  Also (finding 2): one argument holding a whole
command line (``vshx 'domstate D; list'``) is read as virsh reads its command string, and
(the namespace note) a snapshot vshx redefines keeps its metadata's namespace prefixes."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from conftest import LAB_PREFIX, URI, Lab, define_domain, run_vshx, virsh

pytestmark = pytest.mark.libvirt

# names whose order by name (case folded), by creation and topologically all differ
EXTRA = ("Zed", "a0", "B1")


def run_virsh(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """virsh as a user runs it, failing or not."""
    return subprocess.run(
        ["virsh", "-c", URI, *args], capture_output=True, text=True, check=False, cwd=cwd
    )


def add_snapshots(lab: Lab) -> None:
    """sn1..sn4, then Zed, a0 (each on the last), and B1, a second child of sn1 (sn2's
    metadata under another name): a branch, and an order by name unlike any other."""
    for name in EXTRA[:2]:
        virsh(
            "snapshot-create-as", lab.name, name, "--disk-only", "--atomic",
            "--diskspec", f"vda,file={lab.dir / (name + '.qcow2')}",
        )  # fmt: skip
    xml = virsh("snapshot-dumpxml", lab.name, "sn2").stdout
    xml = xml.replace("<name>sn2</name>", "<name>B1</name>", 1)
    virsh("snapshot-create", lab.name, "/dev/stdin", "--redefine", "--disk-only", stdin=xml)
    virsh("snapshot-current", lab.name, "a0")  # redefining made B1 current


def table_names(text: str) -> list[str]:
    """The Name column of a virsh-style table (vshx marks the current snapshot with ``*``)."""
    return [line.split()[0] for line in text.splitlines()[2:] if line.strip()]


def without_moments(tree: str) -> str:
    """vshx's --tree with each name line's moments taken off: virsh's drawing."""
    return re.sub(r"(?m)^((?:[ |]*\+- )?\S+)    .*$", r"\1", tree)


def test_snapshot_list_in_virshs_order_and_lines(lab: Lab) -> None:
    add_snapshots(lab)
    for form in (["--name"], ["--name", "--topological"], ["--parent", "--name"]):
        theirs, ours = (
            run_virsh("snapshot-list", lab.name, *form),
            run_vshx("snapshot-list", lab.name, *form),
        )
        assert ours.returncode == theirs.returncode == 0, ours.stderr
        assert ours.stdout == theirs.stdout, form
    named = run_virsh("snapshot-list", lab.name, "--name").stdout
    assert named.splitlines() == ["a0", "B1", "sn1", "sn2", "sn3", "sn4", "Zed", ""]
    for form in ([], ["--parent"], ["--topological"]):
        theirs, ours = (
            run_virsh("snapshot-list", lab.name, *form),
            run_vshx("snapshot-list", lab.name, *form),
        )
        assert ours.returncode == theirs.returncode == 0, ours.stderr
        assert table_names(ours.stdout) == table_names(theirs.stdout), form
        assert ours.stdout.endswith("\n\n") and theirs.stdout.endswith("\n\n")
        assert len(ours.stdout.splitlines()) == len(theirs.stdout.splitlines())
        assert "Moment on each disk" in ours.stdout.splitlines()[0]  # vshx's own column stays
    for form in (["--tree"], ["--tree", "--topological"]):
        theirs, ours = (
            run_virsh("snapshot-list", lab.name, *form),
            run_vshx("snapshot-list", lab.name, *form),
        )
        assert ours.returncode == theirs.returncode == 0, ours.stderr
        assert without_moments(ours.stdout) == theirs.stdout, form
        assert "vda: " in ours.stdout  # each name's moments, vshx's own
    for form in (["--tree", "--name"], ["--tree", "--parent"]):  # virsh refuses: its words
        theirs, ours = (
            run_virsh("snapshot-list", lab.name, *form),
            run_vshx("snapshot-list", lab.name, *form),
        )
        assert (ours.returncode, ours.stdout, ours.stderr) == (
            theirs.returncode,
            theirs.stdout,
            theirs.stderr,
        )
    quiet = ["-q", "snapshot-list", lab.name, "--name"]  # virsh's -q: no empty line
    assert (
        run_vshx(*quiet).stdout == run_virsh(*quiet).stdout == "a0\nB1\nsn1\nsn2\nsn3\nsn4\nZed\n"
    )


def test_domblklist_and_list_end_as_virshs(lab: Lab) -> None:
    for form in ([], ["--details"]):
        theirs, ours = (
            run_virsh("domblklist", lab.name, *form),
            run_vshx("domblklist", lab.name, *form),
        )
        assert ours.stdout == theirs.stdout and ours.stdout.endswith("\n\n"), form
    theirs, ours = (
        run_virsh("domblklist", "no-such-domain"),
        run_vshx("domblklist", "no-such-domain"),
    )
    assert (ours.returncode, ours.stdout) == (theirs.returncode, theirs.stdout) == (1, "\n")
    for form in (["--name"], [], ["--all", "--name"], ["--all"], ["--inactive", "--name"]):
        for _attempt in range(5):  # other tests make and remove domains meanwhile
            before = run_virsh("list", *form).stdout
            ours = run_vshx("list", *form)
            if before == run_virsh("list", *form).stdout:
                break
        assert ours.stdout == before, form
    assert run_vshx("list", "--json").stdout.rstrip("\n").endswith("}")  # vshx's own: no line


def test_empty_lists_end_as_virshs(tmp_path: Path) -> None:
    name = f"{LAB_PREFIX}parity-empty"
    define_domain(name, {})  # no disk, no snapshot
    try:
        for words in (
            ["snapshot-list", name, "--name"],
            ["snapshot-list", name, "--tree"],
            ["domblklist", name],
            ["domblklist", name, "--details"],
        ):
            theirs, ours = run_virsh(*words), run_vshx(*words)
            assert ours.stdout == theirs.stdout, words
        theirs, ours = run_virsh("snapshot-list", name), run_vshx("snapshot-list", name)
        assert theirs.stdout.splitlines()[2:] == ours.stdout.splitlines()[2:] == [""]
    finally:
        run_virsh("undefine", name)


HOSTILE = [
    'echo --shell $(touch made-by-a-shell) `touch made-by-a-shell` \'a b\' "c\\"d" e\\ f',
    "echo --shell \"back\\slash\" 'back\\slash' ~ ~/x a\\$b",
    "echo --shell \"two\nlines\" 'three\nlines' \\\n joined; echo --shell next",
    "echo --shell one\necho --shell two # a comment; not a command\necho --shell three",
    "echo --shell 'open to the end",
    "'#quoted' comment; echo --shell a\rb",
]


def test_one_word_command_line_is_virshs_command_string(lab: Lab, tmp_path: Path) -> None:
    for line in (f"domstate {lab.name}", f"domstate {lab.name}; domstate {lab.name} --reason"):
        theirs, ours = run_virsh(line), run_vshx(line)
        assert theirs.returncode == 0, theirs.stderr
        assert (ours.returncode, ours.stdout) == (theirs.returncode, theirs.stdout)
    line = f"snapshot-list {lab.name} --name; domblklist {lab.name}"
    assert run_vshx(line).stdout == run_virsh(line).stdout
    here = tmp_path / "cwd"
    here.mkdir()
    for line in HOSTILE:  # split by vshx as virsh splits it; echo shows the words virsh got
        theirs, ours = run_virsh(line, cwd=here), run_vshx(line, cwd=str(here))
        assert (ours.returncode, ours.stdout) == (theirs.returncode, theirs.stdout), line
    assert list(here.iterdir()) == []  # no shell ran anything
    dangling = run_vshx(f"domstate {lab.name}\\")
    assert (dangling.returncode, dangling.stdout) == (2, "")  # virsh: "dangling \", exit 1
    assert "dangling" in dangling.stderr
    unknown = run_vshx("no-such-command here")
    assert unknown.returncode == 2 and "unknown command" in unknown.stderr
    # the first command that fails ends the line, as on a line of vshx's shell
    stops = run_vshx(f"domstate no-such-domain; domstate {lab.name}")
    assert stops.returncode == 1 and stops.stdout == "\n"


def test_one_word_command_line_plans_and_teaches_the_same(lab: Lab) -> None:
    merge = ["commit", lab.name, "vda", "--base", "sn1.qcow2", "--top", "sn3.qcow2"]
    apart = run_vshx("--dry-run", *merge)
    whole = run_vshx("--dry-run", " ".join(merge))
    assert apart.returncode == whole.returncode == 0, whole.stderr
    assert whole.stdout == apart.stdout and "blockcommit" in whole.stdout
    line = f"domblklist {lab.name}; snapshot-list {lab.name} --name"
    script = run_vshx("--teach", "-f", "-", stdin=line + "\n")
    taught = run_vshx("--teach", line)
    assert taught.returncode == script.returncode == 0, taught.stderr
    assert taught.stdout == script.stdout and "virsh -c" in taught.stdout
    assert run_vshx("--dry-run", line).stdout == run_vshx("--dry-run", "-f", "-", stdin=line).stdout


def test_redefined_snapshot_keeps_metadata_prefixes(lab: Lab) -> None:
    virsh("metadata", lab.name, "http://example.org/app", "--key", "app", "--live",
          "--set", '<x a="1"><y/></x>')  # fmt: skip
    virsh(
        "snapshot-create-as", lab.name, "s5", "--disk-only", "--atomic",
        "--diskspec", f"vda,file={lab.dir / 's5.qcow2'}",
    )  # fmt: skip
    before = virsh("snapshot-dumpxml", lab.name, "s5").stdout
    assert '<app:x xmlns:app="http://example.org/app"' in before
    done = run_vshx("snapshot-delete", lab.name, "sn4", "--route", "commit")
    assert done.returncode == 0, done.stderr
    after = virsh("snapshot-dumpxml", lab.name, "s5").stdout
    assert str(lab.dir / "sn3.qcow2") in after and "sn4.qcow2" not in after  # redefined
    assert '<app:x xmlns:app="http://example.org/app" a="1">' in after
    assert "<app:y/>" in after and "<vshx:lab " in after
    assert "ns0" not in after
