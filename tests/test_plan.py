"""Plans print as shell scripts whose words survive the shell exactly."""

import subprocess

from vshx.plans.plan import Plan, Step, shell_line, virsh

NASTY = [
    "/tmp/a b.qcow2",
    "/tmp/it's.qcow2",
    '/tmp/"q".qcow2',
    "/tmp/$(touch pwned)",
    "/tmp/-lead",
    "/tmp/back`tick`",
    "/tmp/semi;colon",
    "",
    "/tmp/new\nline",
]


def test_shell_line_round_trips_through_sh(tmp_path):
    line = shell_line(["printf", "%s\\0", *NASTY])
    out = subprocess.run(["sh", "-c", line], capture_output=True, cwd=tmp_path, check=True)
    assert out.stdout.decode().split("\0")[:-1] == NASTY
    assert not (tmp_path / "pwned").exists()


def test_script_has_comments_and_one_command_per_step(tmp_path):
    plan = Plan("demo", method="offline: qemu-img")
    plan.add(Step("first", ["touch", str(tmp_path / "x y")]))
    plan.add(Step("second", ["cat"], stdin="<disk/>"))
    script = plan.script()
    lines = script.splitlines()
    assert lines[0] == "#!/bin/sh"
    assert "# step 1: first" in lines
    assert "cat <<'VSHX_EOF'" in lines and "<disk/>" in lines
    out = subprocess.run(["sh", "-e"], input=script, capture_output=True, text=True, check=True)
    assert out.stdout == "<disk/>\n"
    assert (tmp_path / "x y").exists()


def test_step_runs_its_argv_or_action(tmp_path):
    hit = []
    Step("action", ["true"], action=lambda: hit.append(1)).run()
    Step("argv", ["touch", str(tmp_path / "f")]).run()
    assert hit == [1] and (tmp_path / "f").exists()


def test_only_names_starting_with_a_dash_get_the_named_form():
    assert virsh("u", "snapshot-delete", "d", "sn1", "--metadata") == [
        *("virsh", "-c", "u", "snapshot-delete", "d", "sn1", "--metadata"),
    ]
    assert virsh("u", "snapshot-delete", "-d", "--current", "--metadata") == [
        *("virsh", "-c", "u", "snapshot-delete", "--domain", "-d"),
        *("--snapshotname", "--current", "--metadata"),
    ]
    assert virsh("u", "update-device", "--x", "/dev/stdin", "--config")[3:] == [
        *("update-device", "--domain", "--x", "/dev/stdin", "--config"),
    ]
    assert virsh("u", "list", "--all") == ["virsh", "-c", "u", "list", "--all"]
