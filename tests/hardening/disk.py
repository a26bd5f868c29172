"""A file system that fills up: a 4 MiB tmpfs (needs root, which this project's machines and CI have), or, where
mounting is not allowed, the process's file size limit (`RLIMIT_FSIZE`, set on the server from outside).

`HARDENING_FULL_DISK=rlimit` forces the fallback (to test it on a machine that could mount).
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import psutil  # type: ignore[import-untyped]

Mode = Literal["tmpfs", "rlimit"]
SIZE = "4m"


@dataclass
class SmallDisk:
    """`root` is where the state directory goes; `fill` makes writes there fail, `free` makes room again."""

    root: Path
    mode: Mode

    @property
    def _filler(self) -> Path:
        return self.root / "filler"

    def fill(self, pid: int | None = None) -> None:
        """No room left: with tmpfs for everyone, with the rlimit for process `pid` (files may not grow)."""
        if self.mode == "tmpfs":
            fd = os.open(self._filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            chunk = 1 << 16
            try:
                while chunk:
                    try:
                        os.write(fd, b"\0" * chunk)
                    except OSError as error:
                        if error.errno != errno.ENOSPC:
                            raise
                        chunk //= 2
            finally:
                os.close(fd)
            assert os.statvfs(self.root).f_bavail == 0
        else:
            assert pid is not None, "the rlimit fallback limits one process"
            psutil.Process(pid).rlimit(psutil.RLIMIT_FSIZE, (0, psutil.RLIM_INFINITY))

    def free(self, pid: int | None = None) -> None:
        if self.mode == "tmpfs":
            self._filler.unlink()
        else:
            assert pid is not None
            psutil.Process(pid).rlimit(psutil.RLIMIT_FSIZE, (psutil.RLIM_INFINITY, psutil.RLIM_INFINITY))


def _mount_tmpfs(path: Path) -> bool:
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={SIZE},mode=0700", "tmpfs", str(path)], capture_output=True, check=False
    )
    return done.returncode == 0


@contextlib.contextmanager
def small_disk() -> Iterator[SmallDisk]:
    """A fresh small file system (tmpfs when it can be mounted), removed afterwards."""
    root = Path(tempfile.mkdtemp(prefix="bsc-disk-", dir="/tmp"))
    forced = os.environ.get("HARDENING_FULL_DISK", "")
    mounted = forced != "rlimit" and _mount_tmpfs(root)
    if forced == "tmpfs" and not mounted:
        raise RuntimeError("HARDENING_FULL_DISK=tmpfs, but mounting a tmpfs failed")
    try:
        yield SmallDisk(root, "tmpfs" if mounted else "rlimit")
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(root)], check=False)
        subprocess.run(["rm", "-rf", str(root)], check=False)
