#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: the vshx authors
# MIT License, as vshx itself (SPDX-License-Identifier: MIT)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: chain_info
short_description: Read a domain's backing chains and where each snapshot's moment is (vshx)
description:
  - Runs C(vshx chain --json) and C(vshx snapshot-list --json) on the managed host and returns
    both documents' contents. Changes nothing.
  - Each layer has its path, format, sizes and role; each snapshot, per disk, the file that
    shows its moment (V(intact), V(merged), V(gone) or V(unknown)), as vshx judges it.
version_added: "0.1.0"
author:
  - the vshx authors
extends_documentation_fragment:
  - vshx.libvirt.vshx
options:
  domain:
    description:
      - The domain's name, id or uuid, or the path of a bare image.
    type: str
    required: true
  disk:
    description:
      - Only this disk (target V(vda) or its source file); default every disk.
    type: str
  snapshots:
    description:
      - Also read the domain's snapshots (not for a bare image).
    type: bool
    default: true
notes:
  - Supports C(check_mode); it changes nothing anyway.
seealso:
  - module: vshx.libvirt.commit
  - module: vshx.libvirt.snapshot_delete
"""

EXAMPLES = r"""
- name: Read the chain of vda and the snapshots of web
  vshx.libvirt.chain_info:
    domain: web
    disk: vda
  register: web

- name: Show the active layer's file
  ansible.builtin.debug:
    msg: "{{ web.chains[0].layers[0].path }}"
"""

RETURN = r"""
chains:
  description: One chain per disk, active layer first (C(vshx chain --json)'s C(chains)).
  returned: always
  type: list
  elements: dict
  sample:
    - domain: web
      disk: vda
      live: true
      layers:
        - ref: "vda[2]"
          position: 0
          index: 2
          path: /var/lib/libvirt/images/web-sn1.qcow2
          format: qcow2
          backing: /var/lib/libvirt/images/web.qcow2
          backing_format: qcow2
          virtual_size: 10737418240
          allocated: 1048576
          role: active
snapshots:
  description:
    - The domain's snapshots (C(vshx snapshot-list --json)'s C(snapshots)), each with its
      moment per disk; empty for a bare image or with O(snapshots=false).
  returned: always
  type: list
  elements: dict
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.vshx.libvirt.plugins.module_utils.vshx import COMMON_ARGS, Vshx


def main():
    argument_spec = dict(
        COMMON_ARGS,
        domain=dict(type="str", required=True),
        disk=dict(type="str"),
        snapshots=dict(type="bool", default=True),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    params = module.params
    vshx = Vshx(module)
    chains = vshx.chains(params["domain"], params["disk"])
    snapshots = []
    if params["snapshots"] and chains and chains[0].get("domain") is not None:
        snapshots = vshx.snapshots(params["domain"])
    module.exit_json(changed=False, chains=chains, snapshots=snapshots)


if __name__ == "__main__":
    main()
