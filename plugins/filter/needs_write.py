"""The `needs_write` filter: lets a role skip a template, copy or directory task whose path is
already as that task would leave it.

Over a docker or SSH connection a template task that changes nothing still costs four remote
round trips (make a tmp dir, stat, a file module call to settle owner and mode, remove the tmp
dir): about 0.6 s. A role instead reads every path it manages with one call of the path_state
module (plugins/modules) and guards each task with

    when: __role_found | needs_write(dest, lookup('ansible.builtin.template', src), '0644')

The guard only ever skips a task that would have reported "ok": the task runs, with its own
validation, diff and check mode, whenever the content (SHA-1), type, mode, owner or group differ
or the path is missing. A path the role did not read is an error, not a silent extra round trip:
add it to the role's __<role>_managed_paths.
"""

from __future__ import annotations

import hashlib
from typing import Any

from ansible.errors import AnsibleFilterError


def needs_write(
    found: dict[str, Any],
    path: str,
    content: str | None = None,
    mode: str | None = None,
    *,
    owner: str = "root",
    group: str = "root",
) -> bool:
    """True unless `path` is in the path_state result with this content and these attributes.

    `found` is the registered result of path_state; `content` is the text the task would write,
    or None for a directory.
    """
    now = found.get("paths", {}).get(path)
    if now is None:
        if path not in found.get("missing", []):
            raise AnsibleFilterError(
                f"needs_write: {path} was not read by path_state; add it to the role's managed paths"
            )
        return True
    if content is None:
        if now["type"] != "directory":
            return True
    elif now["type"] != "file" or now.get("checksum") != hashlib.sha1(str(content).encode()).hexdigest():
        return True
    if mode is not None and int(str(mode), 8) != int(now["mode"], 8):
        return True
    return bool(now["owner"] != owner or now["group"] != group)


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"needs_write": needs_write}
