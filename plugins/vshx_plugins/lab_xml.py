"""The practice lab's libvirt XML: a small domain, and the disk-only snapshot request that
``virsh snapshot-create-as --disk-only --diskspec ...`` sends to libvirt."""

from __future__ import annotations

from html import escape

LAB_NS = "https://vshx.invalid/lab"


def disk_xml(target: str, path: str) -> str:
    return f"""    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file="{escape(path)}"/>
      <target dev='{escape(target)}' bus='virtio'/>
    </disk>
"""


# A lab's guest has no operating system: its firmware looks for one and spins its vCPU for
# ~3.5 s of a core at each start (measured here: KVM, SeaBIOS), which a classroom of labs on
# one host pays many times over.  Where the daemon can (a system daemon with the cgroup cpu
# controller), the vCPU gets 5 % of a core: the guest writes, snapshots and block jobs run
# in QEMU's own threads, never on the vCPU.
VCPU_CAP = "<cputune><period>100000</period><quota>5000</quota></cputune>"


def domain_xml(
    name: str, uuid: str, disks: dict[str, str], kvm: bool, owner: str, capped: bool = False
) -> str:
    """A domain on ``disks`` (target -> file), marked as a lab (and whose) by its metadata;
    ``capped``: its vCPU limited to 5 % of a core (VCPU_CAP)."""
    devices = "".join(disk_xml(target, path) for target, path in disks.items())
    cap = f"\n  {VCPU_CAP}" if capped else ""
    return f"""<domain type='{"kvm" if kvm else "qemu"}'>
  <name>{escape(name)}</name>
  <uuid>{uuid}</uuid>
  <metadata><vshx:lab xmlns:vshx='{LAB_NS}' owner='{escape(owner)}'/></metadata>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>{cap}
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>
  <on_crash>destroy</on_crash>
  <devices>
{devices.rstrip()}
    <memballoon model='none'/>
  </devices>
</domain>
"""


def snapshot_request(name: str, overlays: dict[str, str]) -> str:
    """What snapshot-create-as NAME --disk-only --diskspec T,file=F... asks libvirt for."""
    disks = "".join(
        f"    <disk name='{escape(target)}' snapshot='external'>"
        f'<source file="{escape(path)}"/></disk>\n'
        for target, path in overlays.items()
    )
    return f"""<domainsnapshot>
  <name>{escape(name)}</name>
  <disks>
{disks.rstrip()}
  </disks>
</domainsnapshot>
"""
