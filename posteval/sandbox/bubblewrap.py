"""The ``bubblewrap`` backend: everything the local backend does, inside ``bwrap`` with a read-only root,
a private /tmp and /dev, a fresh /proc, every namespace unshared (network included) and the program's
folder the only writable place. When posteval runs as root, bwrap itself is started as the worker slot's
unprivileged user (it then builds its namespaces through a user namespace, as it does for anyone).
"""

from __future__ import annotations

import os
import shutil

from posteval.errors import SandboxError
from posteval.sandbox.base import Execution, Limits, Program, register_backend
from posteval.sandbox.process import Launch, execute
from posteval.settings import get_settings

INSIDE = "/tmp/program"


class BubblewrapSandbox:
    """Programs under bwrap: read-only root, private /tmp, no network."""

    name = "bubblewrap"

    def __init__(self) -> None:
        binary = shutil.which("bwrap")
        if binary is None:
            raise SandboxError(
                "sandbox backend 'bubblewrap' needs bwrap (Debian/Ubuntu: apt-get install bubblewrap); "
                "or use backend: local"
            )
        self.binary = binary
        self.as_root = os.geteuid() == 0

    def notes(self) -> list[str]:
        """Nothing is left out (bwrap refuses to start instead)."""
        return []

    def launch(self, slot: int) -> Launch:
        """bwrap's command line for worker ``slot``."""
        uid = get_settings().sandbox_uid + slot if self.as_root else None
        prefix = [
            self.binary,
            "--ro-bind", "/", "/",
            "--dev", "/dev",
            "--proc", "/proc",
            "--tmpfs", "/tmp",
            "--bind", "{dir}", INSIDE,
            "--chdir", INSIDE,
            "--unshare-all",
            "--die-with-parent",
            "--new-session",
            "--clearenv",
            "--setenv", "PATH", "/usr/bin:/bin",
            "--setenv", "LANG", "C.UTF-8",
            "--",
        ]  # fmt: skip
        # bwrap's outer process may exit while its namespace is still dying: reaped after every program.
        return Launch(prefix=prefix, workdir_inside=INSIDE, user=uid, owner=uid)

    def run(self, program: Program, limits: Limits, *, slot: int = 0) -> Execution:
        """Run ``program`` under bwrap in a fresh folder."""
        return execute(program, limits, self.launch(slot), ())


register_backend("bubblewrap", BubblewrapSandbox)
