"""Shared fixtures: run vshx as a user would, and build fresh practice labs on the real daemon."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sshd import SSHD, Sshd, start_sshd

# the one place the integration tier's URI is chosen: qemu:///session runs every test that
# needs no root as a plain user; tests marked `root` skip there with the reason
URI = os.environ.get("VSHX_TEST_URI", "qemu:///system")
ROOT = Path(__file__).resolve().parent.parent  # the checkout: scripts/ live there
SYSTEM_URI = "qemu:///system"
# shell completion answers nothing after 0.3 s (a frozen daemon must not freeze a shell); a
# loaded test machine misses that now and then, so tests that check what it answers get time,
# and the test of the deadline itself sets it back
os.environ.setdefault("VSHX_COMPLETE_DEADLINE", "15")
# every name a test gives a domain, pool or user starts with LAB_PREFIX, which carries this
# run's id: the clean-up at the end removes this run's leftovers only, never another run's
# (parallel runs may also pick their own base prefix)
RUN_ID = uuid.uuid4().hex[:6]
LAB_PREFIX = f"{os.environ.get('VSHX_TEST_LAB_PREFIX', 'vshx-t-')}{RUN_ID}-"

XDG_KINDS = ("CACHE", "STATE", "CONFIG", "DATA")
# libvirt's session daemon keeps the real homes (its socket paths must stay short and outlive
# the run): the probe starts it with these; libvirt finds its socket under XDG_RUNTIME_DIR,
# else under the cache home, so that is pinned for every test
REAL_ENV = dict(os.environ)
RUNTIME_DIR = (
    os.environ.get("XDG_RUNTIME_DIR")
    or os.environ.get("XDG_CACHE_HOME")
    or str(Path.home() / ".cache")
)


def private_homes(base: Path) -> dict[str, str]:
    """XDG homes under ``base``, owned by us, mode 0700, as vshx.storage.statefiles demands."""
    base.chmod(0o700)
    homes = {"XDG_RUNTIME_DIR": RUNTIME_DIR}
    for kind in XDG_KINDS:
        home = base / kind.lower()
        home.mkdir(mode=0o700)
        homes[f"XDG_{kind}_HOME"] = str(home)
    return homes


# what runs outside a test (collection, module fixtures) gets this run's own homes too
SESSION_HOMES = Path(tempfile.mkdtemp(prefix="vshx-tests-xdg-"))
os.environ.update(private_homes(SESSION_HOMES))
# a warm server the developer runs (vshx --warm start) would run the tests' one-shot commands:
# they run in their own processes; the warm tests give their server a runtime dir of its own
os.environ["VSHX_WARM"] = "off"


def run_vshx(
    *args: str, stdin: str | None = None, env: dict | None = None, cwd: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the vshx entry point in a child process, exactly as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "vshx", "-c", URI, *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        check=False,
    )


def guest_hash(path: str | Path, tmp: Path) -> str:
    """What the guest sees: sha256 of the raw conversion of the active layer (-U: in use)."""
    raw = tmp / f"guest-{uuid.uuid4().hex}.raw"
    subprocess.run(["qemu-img", "convert", "-U", "-O", "raw", str(path), str(raw)], check=True)
    digest = hashlib.sha256(raw.read_bytes()).hexdigest()
    raw.unlink()
    return digest


def flush_guest(domain: str, disk: str = "vda") -> None:
    """Make a running QEMU write back its qcow2 metadata cache so -U readers see the truth.

    Without this, `qemu-img convert -U` of an image a running QEMU has just written (a pull
    into the active layer) can read stale L2 tables: the data is safe in QEMU, not yet on disk.
    ``disk`` is the target (vda, vdb...): libvirt names its device virtio-disk0, -1...
    """
    device = f"virtio-disk{ord(disk[-1]) - ord('a')}/virtio-backend"
    subprocess.run(
        [
            "virsh",
            "-c",
            URI,
            "qemu-monitor-command",
            domain,
            "--hmp",
            f'qemu-io -d {device} "flush"',
        ],
        capture_output=True,
        check=True,
    )


def qemu_check(path: str | Path) -> None:
    """Assert qemu-img check is clean for one image."""
    proc = subprocess.run(["qemu-img", "check", "-U", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def qemu_img_chain(path: str | Path) -> list[dict]:
    """`qemu-img info --backing-chain` of an image, active first: qemu-img's own word."""
    import json

    out = subprocess.run(
        ["qemu-img", "info", "--backing-chain", "--output=json", "-U", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out)


def qemu_img_map(path: str | Path) -> list[dict]:
    """`qemu-img map --output=json -U` of an image: where its data lives, qemu-img's own word."""
    import json

    out = subprocess.run(
        ["qemu-img", "map", "-U", "--output=json", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out)


def chain_files(path: str | Path) -> list[str]:
    """Base names of the chain below an image, active first, via qemu-img itself."""
    return [os.path.basename(e["filename"]) for e in qemu_img_chain(path)]


def block_job(name: str, disk: str = "vda") -> str:
    """virsh blockjob --info (its progress goes to stderr)."""
    proc = subprocess.run(
        ["virsh", "-c", URI, "blockjob", name, disk, "--info"], capture_output=True, text=True
    )
    return proc.stdout + proc.stderr


def wait_for(condition: Callable[[], object], what: str) -> None:
    """Poll ``condition`` until it holds (at most 120 s: then the test fails saying what)."""
    deadline = time.monotonic() + 120
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.1)


def wait_for_block_job(lab: Lab, kind: str, proc: subprocess.Popen) -> None:
    """Return once libvirt shows a block job of ``kind`` ("Block Commit") on the lab's vda."""
    import time

    for _ in range(400):
        info = subprocess.run(
            ["virsh", "-c", URI, "blockjob", lab.name, "vda", "--info"],
            capture_output=True,
            text=True,
        )
        if kind in info.stdout + info.stderr:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError("the block job never started")


def virsh(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run virsh on the test URI; fail the test if it fails (skip it where no daemon answers:
    a test that needs one and forgot its `libvirt` mark)."""
    if reason := daemon_missing():
        pytest.skip(reason)
    return subprocess.run(
        ["virsh", "-c", URI, *args], input=stdin, capture_output=True, text=True, check=True
    )


def release_remote(remote: object) -> None:
    """After a test that locked chains over ssh: let go of every lock this process holds, make
    the local host current again and close the ssh connection."""
    from vshx.plans import lock
    from vshx.storage import host

    lock.release_all()
    host.select("qemu:///system")
    close = getattr(remote, "close", None)
    if close is not None:
        close()


def define_domain(name: str, disks: dict[str, Path | str]) -> None:
    """Define a persistent domain (TCG, 64 MiB) on these qcow2 files (target -> file), not
    started: what an admin's `virsh define` of a few lines leaves."""
    devices = "".join(
        "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
        f"<source file='{source}'/><target dev='{dev}' bus='virtio'/></disk>"
        for dev, source in disks.items()
    )
    virsh(
        "define",
        "/dev/stdin",
        stdin=f"<domain type='qemu'><name>{name}</name><memory unit='MiB'>64</memory>"
        f"<os><type arch='x86_64'>hvm</type></os><devices>{devices}</devices></domain>",
    )


def make_overlay(path: Path, backing: str) -> None:
    """A qcow2 overlay on ``backing`` (written as given: relative or absolute)."""
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", backing, str(path)],
        check=True,
    )


def snapshot_names(domain: str) -> list[str]:
    out = subprocess.run(
        ["virsh", "-c", URI, "snapshot-list", domain, "--name"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return sorted(n for n in out.split() if n)


def domain_source(domain: str, inactive: bool = False, disk: str = "vda") -> str:
    """The disk source of ``disk`` (vda) as libvirt says it."""
    args = ["virsh", "-c", URI, "domblklist", domain] + (["--inactive"] if inactive else [])
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        parts = line.split(None, 1)
        if parts and parts[0] == disk:
            return parts[1].strip()
    raise AssertionError(out)


def file_state(directory: Path) -> dict[str, bytes]:
    """Every file's bytes in a directory, to prove that nothing changed."""
    return {
        p.name: hashlib.sha256(p.read_bytes()).digest()
        for p in sorted(directory.iterdir())
        if p.is_file()
    }


def snapshot_sources(domain: str, snapshot: str) -> tuple[dict[str, str], dict[str, str]]:
    """A snapshot's files per disk, as its metadata says: the moment (the disk source in its
    ``<domain>`` block) and the overlay it created (its ``<disks>`` block)."""
    import xml.etree.ElementTree as ET

    root = ET.fromstring(virsh("snapshot-dumpxml", domain, snapshot).stdout)
    moment = {
        d.find("target").get("dev"): d.find("source").get("file")  # type: ignore[union-attr]
        for d in root.findall("./domain/devices/disk")
    }
    made = {
        d.get("name"): d.find("source").get("file")  # type: ignore[union-attr]
        for d in root.findall("./disks/disk")
        if d.get("snapshot") == "external"
    }
    return moment, made  # type: ignore[return-value]


@dataclass
class Lab:
    name: str
    dir: Path
    running: bool
    disks: int = 1
    # snapshot -> disk -> guest hash of its moment, read right after lab-create (record_moments)
    moments: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def targets(self) -> list[str]:
        return ["vda", "vdb", "vdc", "vdd"][: self.disks]

    def layer(self, name: str, disk: str = "vda") -> Path:
        return self.dir / (f"{name}.qcow2" if disk == "vda" else f"{disk}-{name}.qcow2")

    @property
    def active(self) -> Path:
        return self.active_of("vda")

    def active_of(self, disk: str) -> Path:
        return Path(domain_source(self.name, inactive=not self.running, disk=disk))

    def guest_hash(self, tmp: Path, disk: str = "vda") -> str:
        """The guest's view of a disk now (flushed first when the domain runs)."""
        if self.running:
            flush_guest(self.name, disk)
        return guest_hash(self.active_of(disk), tmp)

    def relative_backing_names(self) -> None:
        """Rewrite every layer's backing name as a bare file name (``-b sn1.qcow2``), as chains
        made by hand with qemu-img name them; libvirt's snapshots name absolute paths.  The
        same files stay below (``rebase -u``), so no data and no moment changes.  Shut off."""
        assert not self.running, "qemu-img rebase needs the images closed"
        for disk in self.targets:
            for entry in qemu_img_chain(self.active_of(disk)):
                backing = entry.get("full-backing-filename")
                if backing:
                    subprocess.run(
                        ["qemu-img", "rebase", "-u", "-F", "qcow2", "-b",
                         os.path.basename(backing), entry["filename"]],
                        check=True,
                    )  # fmt: skip

    def record_moments(self, tmp: Path) -> dict[str, dict[str, str]]:
        """Each snapshot's moment per disk: the guest view of the file its ``<domain>`` block
        names as that disk's source (qemu-img convert -U).  Call it right after creation."""
        self.moments = {}
        for snap in snapshot_names(self.name):
            sources, _made = snapshot_sources(self.name, snap)
            self.moments[snap] = {d: guest_hash(sources[d], tmp) for d in self.targets}
        return self.moments

    def check_moments(self, tmp: Path) -> list[str]:
        """Assert every remaining snapshot names, per disk, an existing file that shows exactly
        its recorded moment; return the remaining snapshots."""
        left = snapshot_names(self.name)
        for snap in left:
            sources, _made = snapshot_sources(self.name, snap)
            for disk in self.targets:
                path = sources[disk]
                assert os.path.exists(path), f"{snap} {disk}: {path} is gone"
                seen = guest_hash(path, tmp)
                assert seen == self.moments[snap][disk], (
                    f"{snap} {disk}: {path} shows another moment"
                )
        return left


def make_lab(
    tmp_path: Path,
    running: bool = True,
    layers: int = 4,
    fill: int = 0,
    dirname: str = "lab",
    base_fill: int = 0,
    disks: int = 1,
) -> Lab:
    if reason := daemon_missing():  # a test that needs the daemon and forgot its `libvirt` mark
        pytest.skip(reason)
    name = LAB_PREFIX + uuid.uuid4().hex[:8]
    directory = tmp_path / dirname
    args = ["lab-create", name, "--dir", str(directory), "--layers", str(layers)]
    if not running:
        args.append("--shut-off")
    if fill:
        args += ["--fill", str(fill)]
    if base_fill:
        args += ["--base-fill", str(base_fill)]
    if disks != 1:
        args += ["--disks", str(disks)]
    proc = run_vshx(*args)
    assert proc.returncode == 0, proc.stderr
    return Lab(name, directory, running, disks)


def destroy_lab(lab: Lab) -> None:
    """Remove a lab as a user does (lab-destroy); a domain that is still there afterwards (its
    QEMU still going away, a job left by virsh) is removed by virsh, so no run leaves labs on
    the host: every vshx command's usage scan reads every domain.  A lab made transient by
    ``virsh undefine`` while it ran is first defined again (forget_saved_definition)."""
    forget_saved_definition(lab.name)
    done = run_vshx("lab-destroy", lab.name, "--dir", str(lab.dir))
    if done.returncode == 0 and not domain_exists(lab.name):
        return
    for argv in (
        ["destroy", lab.name],
        ["undefine", lab.name, "--snapshots-metadata", "--checkpoints-metadata"],
    ):
        subprocess.run(["virsh", "-c", URI, *argv], capture_output=True, timeout=120)


def forget_saved_definition(name: str) -> None:
    """libvirt 9.0 keeps the persistent definition of a domain undefined while it runs, and
    writes it back into its configuration directory (/etc/libvirt/qemu/NAME.xml) when a block
    job on that domain ends (seen after a pivot and after an abort): the domain stays transient
    and goes with its QEMU, but the file stays, and the next start of libvirtd defines the
    domain again, shut off.  That made the ~116 shut-off `vshx-t-` labs a whole `make test`
    left: the differential suites' transient labs (tp-libvirt's blockcopy and blockjob run
    transient), defined again when the serial tier restarts libvirtd.  So a running transient
    lab is defined again from its live XML before lab-destroy undefines it: libvirt itself then
    removes that file.  (A domain started by ``virsh create`` has no such file; defining it
    first is harmless.)"""
    import libvirt

    conn = libvirt.open(URI)
    try:
        dom = conn.lookupByName(name)
        if dom.isActive() and not dom.isPersistent():
            conn.defineXML(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_SECURE))
    except libvirt.libvirtError:
        pass  # gone, or libvirt refuses: lab-destroy and the check after it say what is left
    finally:
        conn.close()


def saved_definition(name: str) -> Path | None:
    """The file libvirt keeps a domain's persistent definition in, if it is there (qemu:///system
    only: /etc/libvirt/qemu/NAME.xml); libvirt's API cannot list a file it no longer knows."""
    path = Path("/etc/libvirt/qemu") / f"{name}.xml"
    try:
        return path if URI == SYSTEM_URI and path.exists() else None
    except OSError:  # not ours to read (a user allowed on the system daemon by polkit)
        return None


def labs_left(names: list[str]) -> list[str]:
    """Which of these labs outlive their tests: a domain libvirt still lists, or a definition
    file libvirt would define again on its next start."""
    left = []
    for name in names:
        if domain_exists(name):
            left.append(f"{name}: still defined")
        elif (path := saved_definition(name)) is not None:
            left.append(f"{name}: no domain, but libvirt's next start defines it from {path}")
    return left


def domain_exists(name: str) -> bool:
    proc = subprocess.run(
        ["virsh", "-c", URI, "domstate", name], capture_output=True, text=True, timeout=120
    )
    return proc.returncode == 0


@pytest.fixture
def lab(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Lab]:
    """A fresh running practice domain: base <- sn1 <- sn2 <- sn3 <- sn4 (active); the number
    of disks comes from indirect parametrization (``parametrize("lab", [2], indirect=True)``)."""
    made = make_lab(tmp_path, disks=getattr(request, "param", 1))
    yield made
    destroy_lab(made)


@pytest.fixture
def offline_lab(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Lab]:
    """The same lab, shut off (offline qemu-img methods)."""
    made = make_lab(tmp_path, running=False, disks=getattr(request, "param", 1))
    yield made
    destroy_lab(made)


@pytest.fixture
def made(tmp_path: Path) -> Iterator[Callable[..., Lab]]:
    """Labs built by lab-create (libvirt's own snapshot-create-as, guest writes between), as
    many as a test asks for, each snapshot's moment recorded right after."""
    built: list[Lab] = []

    def make(running: bool = True, disks: int = 1) -> Lab:
        lab = make_lab(tmp_path, running=running, disks=disks, dirname=f"lab{len(built)}")
        lab.record_moments(tmp_path)
        built.append(lab)
        return lab

    yield make
    for lab in built:
        destroy_lab(lab)


@pytest.fixture(autouse=True)
def private_xdg_dirs(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Caches, journals, history and labs go to this test's own directories, never to the
    developer's ~/.cache/vshx nor to another test's."""
    for variable, home in private_homes(tmp_path_factory.mktemp("xdg")).items():
        monkeypatch.setenv(variable, home)


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    """This machine as a remote host: a loopback OpenSSH server of the run's own (one per
    pytest worker), reached through the ssh wrapper `sshd.env()` puts first on PATH."""
    if shutil.which(SSHD) is None:
        pytest.fail(f"{SSHD} is missing: `make test` installs openssh-server (bootstrap)")
    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()


_held: list[object] = []  # a connection that keeps the session daemon of the real homes alive


@functools.cache
def daemon_missing() -> str | None:
    """Why the `libvirt` tier cannot run here, or None when libvirtd answers on URI."""
    if shutil.which("virsh") is None:
        return f"virsh is not on PATH (the libvirt tier needs libvirt-clients and {URI})"
    try:
        proc = subprocess.run(
            ["virsh", "-c", URI, "uri"],
            capture_output=True,
            text=True,
            timeout=30,
            env=REAL_ENV,
        )
    except subprocess.TimeoutExpired:
        return f"libvirtd does not answer on {URI} within 30 s"
    if proc.returncode != 0:
        said = (proc.stderr.strip().splitlines() or ["no answer"])[-1]
        return f"libvirtd does not answer on {URI}: {said}"
    if URI.endswith("/session"):
        # a session daemon quits when idle and a test's vshx would start the next one with
        # that test's private XDG homes (gone after the test): hold one connection meanwhile
        import libvirt

        _held.append(libvirt.open(URI))
    return None


def root_missing() -> str | None:
    """Why a `root` test cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root (makes users, mounts file systems or drives the system daemon)"
    if URI != SYSTEM_URI:
        return f"needs {SYSTEM_URI} as root; this run tests {URI} (VSHX_TEST_URI)"
    return None


DAEMON_FIXTURES = {"lab", "offline_lab"}
_used_daemon = False  # a test of this run reached the daemon: the clean-up has work to look for


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test that builds a lab needs the daemon, wherever it lives: mark it `libvirt`."""
    for item in items:
        if DAEMON_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.libvirt)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip, with the reason, what this machine cannot run (pgcli-style): never an error."""
    global _used_daemon
    reason = None
    if item.get_closest_marker("root"):
        reason = root_missing()
    if not reason and item.get_closest_marker("libvirt"):
        reason = daemon_missing()
        _used_daemon = not reason
    if reason:  # a mark, not pytest.skip(): the summary names the test, not this file
        item.add_marker(pytest.mark.skip(reason=reason))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Remove practice domains a crashed test of THIS run left behind (RUN_ID in the name)."""
    try:
        remove_leftover_labs()
    finally:
        shutil.rmtree(SESSION_HOMES, ignore_errors=True)


def remove_leftover_labs() -> None:
    if not _used_daemon or shutil.which("virsh") is None:
        return
    try:
        proc = subprocess.run(
            ["virsh", "-c", URI, "list", "--all", "--name"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired):
        return
    names = {n for n in proc.stdout.split() if n.startswith(LAB_PREFIX)}
    if URI == SYSTEM_URI:  # definitions libvirt wrote back for transient labs: define, remove
        for path in Path("/etc/libvirt/qemu").glob(f"{LAB_PREFIX}*.xml"):
            if path.stem not in names and os.access(path, os.R_OK):
                subprocess.run(["virsh", "-c", URI, "define", str(path)], capture_output=True)
                names.add(path.stem)
    for name in sorted(names):
        run_vshx("lab-destroy", name)


def daemon_answers() -> bool:
    """Ask the socket, not pgrep: a killed libvirtd can linger as a zombie here."""
    try:
        proc = subprocess.run(["virsh", "-c", URI, "uri"], capture_output=True, timeout=5)
    except subprocess.TimeoutExpired:
        return False
    return proc.returncode == 0


def ensure_daemon() -> None:
    """Bring virtlogd/libvirtd back after a test stopped or killed them."""
    import time

    for _ in range(150):
        if daemon_answers():
            return
        subprocess.run(["sh", str(ROOT / "scripts" / "start_daemons.sh")], capture_output=True)
        time.sleep(0.2)
    raise RuntimeError("libvirtd does not answer again")


@contextlib.contextmanager
def loop_over(path: Path) -> Iterator[str]:
    """A loop device reading ``path`` (losetup: root), detached at the end."""
    device = subprocess.run(
        ["losetup", "-f", "--show", str(path)], capture_output=True, text=True, check=True
    ).stdout.strip()
    try:
        yield device
    finally:
        subprocess.run(["losetup", "-d", device], check=True)


@contextlib.contextmanager
def domain_on_loop_device(tmp_path: Path, size: int, label: str) -> Iterator[tuple[str, str]]:
    """A shut-off domain whose disk is a 16M qcow2 written straight onto a loop device over a
    ``size``-byte file (an LVM volume's shape: ``type='block'``); (name, device).  Undefined
    and detached at the end."""
    backing = tmp_path / "device.img"
    backing.write_bytes(b"")
    os.truncate(backing, size)
    name = f"{LAB_PREFIX}{label}-{uuid.uuid4().hex[:8]}"
    with loop_over(backing) as device:
        try:
            subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", device, "16M"], check=True)
            virsh(
                "define",
                "/dev/stdin",
                stdin=f"<domain type='qemu'><name>{name}</name><memory unit='MiB'>64</memory>"
                "<os><type arch='x86_64'>hvm</type></os><devices>"
                "<disk type='block' device='disk'><driver name='qemu' type='qcow2'/>"
                f"<source dev='{device}'/><target dev='vda' bus='virtio'/></disk>"
                "</devices></domain>",
            )
            yield name, device
        finally:
            subprocess.run(["virsh", "-c", URI, "destroy", name], capture_output=True)
            subprocess.run(
                ["virsh", "-c", URI, "undefine", name, "--snapshots-metadata"],
                capture_output=True,
            )


def lock_holder(image: str | Path, command: str = "vshx commit held") -> subprocess.Popen[str]:
    """A vshx-like process holding the lock of the chain whose active layer is ``image``
    (lock.take, as a merge does, its note naming ``command``) until its stdin is closed."""
    code = (
        "import sys; from vshx.plans import lock; lock.take(sys.argv[1], sys.argv[2]);"
        " print('held', flush=True); sys.stdin.read()"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(image), command],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline() == "held\n"
    return proc


def started_job(lab: Lab, *args: str) -> subprocess.Popen[str]:
    """A one-shot vshx running ``args`` (a plan whose first step is a block commit on the lab's
    vda), returned once libvirt shows that job."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "vshx", "-c", URI, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for_block_job(lab, "Block Commit", proc)
    return proc


def process_gone(pid: int) -> bool:
    """True once ``pid`` has ended (a zombie counts: its parent, a killed vshx, is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


# a qemu-img first on PATH that waits at the command line matching $VSHX_STOP_AT (a sh case
# pattern) for killed_at_qemu_img, then runs the real one to its end
WAITING_QEMU_IMG = """#!/bin/sh
case " $* " in
  $VSHX_STOP_AT) echo $$ > "$VSHX_STOP_DIR/pid"
    while [ ! -e "$VSHX_STOP_DIR/go" ]; do sleep 0.05; done ;;
esac
exec "$VSHX_REAL_QEMU_IMG" "$@"
"""


def killed_at_qemu_img(tmp_path: Path, wrapper: str, args: tuple[str, ...], **env: str) -> None:
    """vshx running ``args`` with ``wrapper`` (a sh script) first on PATH as ``qemu-img``: at the
    step it stops at, the wrapper writes its pid into $VSHX_STOP_DIR/pid and waits for
    $VSHX_STOP_DIR/go (then it goes on, with the real qemu-img in $VSHX_REAL_QEMU_IMG).  vshx
    is killed (-9) there, the wrapper let go, and its end waited for, as a killed vshx's
    qemu-img runs on.  ``env``: more of the wrapper's variables."""
    fake, stop = tmp_path / "fake", tmp_path / "stop"
    fake.mkdir()
    stop.mkdir()
    (fake / "qemu-img").write_text(wrapper)
    (fake / "qemu-img").chmod(0o755)
    variables = dict(
        os.environ,
        PATH=f"{fake}:{os.environ['PATH']}",
        VSHX_STOP_DIR=str(stop),
        VSHX_REAL_QEMU_IMG=str(shutil.which("qemu-img")),
        **env,
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "vshx", "-c", URI, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=variables,
    )
    wait_for(lambda: (stop / "pid").exists() or proc.poll() is not None, "the step")
    assert proc.poll() is None, proc.communicate()
    proc.kill()
    proc.communicate()
    (stop / "go").touch()
    pid = int((stop / "pid").read_text())
    wait_for(lambda: process_gone(pid), "the killed vshx's qemu-img to end")
