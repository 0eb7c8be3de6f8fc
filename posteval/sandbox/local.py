"""The ``local`` backend: util-linux ``unshare`` for new PID, mount (a private /proc) and network
namespaces, and, when posteval runs as root, a separate unprivileged user per worker slot.

Where a protection is not available on this machine (no ``unshare``, namespaces not permitted, not
root so no user switch) the program still runs with the rest, and every result and the run's warnings
say what was missing.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess

from posteval.sandbox.base import Execution, Limits, Program, register_backend
from posteval.sandbox.process import Launch, execute
from posteval.settings import get_settings

NAMESPACES = ["--pid", "--fork", "--kill-child", "--mount-proc", "--net"]


@functools.cache
def _unshare_works(as_root: bool) -> str | None:
    """None when ``unshare`` can make the namespaces here, else why not (one line)."""
    binary = shutil.which("unshare")
    if binary is None:
        return "unshare (util-linux) is not installed"
    command = [binary, *([] if as_root else ["--user", "--map-root-user"]), *NAMESPACES, "true"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unshare failed: {exc}"
    if done.returncode != 0:
        return f"unshare cannot make namespaces here: {done.stderr.strip()[:200]}"
    return None


class LocalSandbox:
    """Own process group, fresh folder, clean environment, rlimits; namespaces and a user switch where
    the machine allows them."""

    name = "local"

    def __init__(self) -> None:
        self.as_root = os.geteuid() == 0
        self.unshare_problem = _unshare_works(self.as_root)

    def notes(self) -> list[str]:
        """What this machine leaves out: network, PID isolation, the user switch."""
        notes = []
        if self.unshare_problem is not None:
            notes.append(
                f"no network, PID or /proc isolation ({self.unshare_problem}): programs can open "
                "sockets and see other processes"
            )
        if not self.as_root:
            notes.append(
                "posteval is not root, so programs run as the calling user (in a user namespace where "
                "unshare allows one)"
            )
        return notes

    def launch(self, slot: int) -> Launch:
        """The wrapping command for worker ``slot``."""
        uid = get_settings().sandbox_uid + slot
        if self.unshare_problem is not None:
            # No namespaces: switch user through Popen where we may, so the process limit still binds.
            return Launch(prefix=[], user=uid if self.as_root else None, owner=uid if self.as_root else None)
        if self.as_root:
            prefix = ["unshare", *NAMESPACES, "-S", str(uid), "-G", str(uid), "--"]
            return Launch(prefix=prefix, owner=uid, waits_for_namespace=True)
        return Launch(
            prefix=["unshare", "--user", "--map-root-user", *NAMESPACES, "--"], waits_for_namespace=True
        )

    def run(self, program: Program, limits: Limits, *, slot: int = 0) -> Execution:
        """Run ``program`` in a fresh folder under ``limits``."""
        return execute(program, limits, self.launch(slot), tuple(self.notes()))


register_backend("local", LocalSandbox)
