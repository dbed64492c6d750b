# -*- coding: utf-8 -*-
# Copyright: the vshx authors
# MIT License, as vshx itself (SPDX-License-Identifier: MIT)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    """Options every vshx.libvirt module takes, and those of the merge commands."""

    DOCUMENTATION = r"""
options:
  uri:
    description:
      - The libvirt URI vshx connects to (C(vshx -c URI)); default as virsh's.
    type: str
  vshx_path:
    description:
      - The vshx executable on the managed host, a name looked up on E(PATH) or a full path.
    type: str
    default: vshx
requirements:
  - vshx (with C(--plan-json)) on the managed host, with libvirt-python and qemu-img
notes:
  - vshx must be installed on the managed host; the module runs its command line and reads its
    versioned JSON documents (C(--plan-json), C(chain --json), C(snapshot-list --json)).
  - A failure reports vshx's own C(error:) line, with its C(hint:), in C(msg).
"""

    MERGE = r"""
options:
  bandwidth:
    description:
      - Limit the copy rate, in MiB/s, or with a unit (V(10M)) in bytes per second.
    type: str
  timeout:
    description:
      - Abort the block job after this many seconds (the chain stays as it was).
    type: int
  keep_relative:
    description:
      - Write relative backing file names.
    type: bool
    default: false
  force:
    description:
      - Go ahead although other images or domains use a file that changes.
    type: bool
    default: false
  scan:
    description:
      - Also look in this directory for images whose chains use the files that change.
    type: path
notes:
  - Supports C(check_mode) (vshx's plan, nothing changed) and C(diff) (each disk's chain before
    and after, and every snapshot's moment, so the snapshots whose moments are lost show C(gone)).
"""
