#!/usr/bin/python
"""The path_state module: the state of many paths in one call (see plugins/filter/needs_write.py)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: path_state
short_description: Type, mode, owner, group and SHA-1 of many paths in one call
description:
  - Reads each listed path with lstat (links are not followed) and, for regular files, its SHA-1.
  - A missing path is left out of C(paths) and listed in C(missing). Never changes anything; runs in
    check mode.
  - A role reads every path it manages with one call, and the needs_write filter then skips each
    template, copy or directory task whose path is already as that task would leave it.
options:
  paths:
    description: Absolute paths to read.
    type: list
    elements: path
    required: true
"""

EXAMPLES = r"""
- name: Files the role manages, as they are now
  path_state:
    paths: [/etc/nftables.conf, /etc/systemd/system/nftables.service.d]
  register: __server_found
"""

RETURN = r"""
paths:
  description: One entry per existing path, keyed by the path as given.
  returned: always
  type: dict
  sample:
    /etc/nftables.conf: {type: file, mode: "0644", owner: root, group: root, checksum: "1f0a..."}
missing:
  description: The paths asked for that do not exist.
  returned: always
  type: list
  elements: str
"""

import grp
import os
import pwd
import stat

from ansible.module_utils.basic import AnsibleModule


def _name(lookup, ident: int) -> str:
    try:
        return lookup(ident)[0]
    except KeyError:
        return str(ident)


def main() -> None:
    module = AnsibleModule(
        argument_spec={"paths": {"type": "list", "elements": "path", "required": True}},
        supports_check_mode=True,
    )
    states, missing = {}, []
    for path in module.params["paths"]:
        try:
            st = os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            missing.append(path)
            continue
        kind = next((name for test, name in ((stat.S_ISREG, "file"), (stat.S_ISDIR, "directory"),
                                              (stat.S_ISLNK, "link")) if test(st.st_mode)), "other")
        states[path] = {
            "type": kind,
            "mode": f"{stat.S_IMODE(st.st_mode):04o}",
            "owner": _name(pwd.getpwuid, st.st_uid),
            "group": _name(grp.getgrgid, st.st_gid),
        }
        if kind == "file":
            states[path]["checksum"] = module.sha1(path)
    module.exit_json(changed=False, paths=states, missing=missing)


if __name__ == "__main__":
    main()
