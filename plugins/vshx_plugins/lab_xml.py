"""The practice lab's libvirt XML: a small domain, and snapshot metadata to redefine."""

from __future__ import annotations

from html import escape

LAB_NS = "https://vshx.invalid/lab"


def domain_xml(name: str, uuid: str, disk_path: str, kvm: bool) -> str:
    return f"""<domain type='{"kvm" if kvm else "qemu"}'>
  <name>{escape(name)}</name>
  <uuid>{uuid}</uuid>
  <metadata><vshx:lab xmlns:vshx='{LAB_NS}'/></metadata>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>
  <on_crash>destroy</on_crash>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file="{escape(disk_path)}"/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <memballoon model='none'/>
  </devices>
</domain>
"""


def snapshot_xml(name: str, parent: str | None, layer_path: str, created: int, dom_xml: str) -> str:
    """Redefinition XML; libvirt insists on the domain definition inside it."""
    parent_xml = f"<parent><name>{escape(parent)}</name></parent>" if parent else ""
    return f"""<domainsnapshot>
  <name>{escape(name)}</name>
  <description>vshx practice layer {escape(name)}</description>
  <state>disk-snapshot</state>
  <creationTime>{created}</creationTime>
  <memory snapshot='no'/>
  <disks>
    <disk name='vda' snapshot='external' type='file'>
      <driver type='qcow2'/>
      <source file="{escape(layer_path)}"/>
    </disk>
  </disks>
  {parent_xml}
{dom_xml.rstrip()}
</domainsnapshot>
"""
