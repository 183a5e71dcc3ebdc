"""Decide whether the process recorded as a task's owner is still running.

A PID alone proves little: PIDs are recycled, ``os.kill(pid, 0)`` succeeds for a zombie, and
another host or container has its own PID space. So each owner is recorded with a host
identity and the process's start token, and a live PID counts only when both match.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import functools
import os
import socket
import sys
from typing import Optional

IS_WINDOWS = sys.platform.startswith("win")
IS_MACOS = sys.platform == "darwin"


@dataclasses.dataclass(frozen=True)
class ProcessInfo:
    """The start token and state the operating system reports for one PID."""

    start_token: str
    zombie: bool


@functools.lru_cache(maxsize=None)
def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as handle:
            return handle.read().strip()
    except OSError:
        pass
    if IS_MACOS:
        boot_time = _macos_boot_time()
        if boot_time:
            return "boot-" + boot_time
    return ""


def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def host_name() -> str:
    """Return this machine's host name, as stored in ``worker_host``."""
    return socket.gethostname()


def host_id() -> str:
    """Return the identity of the PID space this process lives in.

    Two processes can compare PIDs only when this value is equal: it joins the host name,
    the boot id (so a reboot changes it) and the PID namespace (so containers that share a
    host name are distinguished).
    """
    return "|".join((host_name(), _boot_id(), _pid_namespace()))


def process_info(pid: int) -> Optional[ProcessInfo]:
    """Return the start token and zombie state of ``pid``, or None when they cannot be read."""
    if IS_MACOS:
        return _macos_process_info(pid)
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        return None
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = data[data.rfind(b")") + 2:].split()
    if len(fields) < 20:
        return None
    state = fields[0].decode()
    start_ticks = fields[19].decode()  # field 22 of /proc/PID/stat: start time in clock ticks
    return ProcessInfo(start_token=start_ticks, zombie=state in ("Z", "X"))


def own_start_token() -> str:
    """Return this process's start token, or "" when the platform gives none."""
    info = process_info(os.getpid())
    return info.start_token if info else ""


def same_host_owner_alive(pid: int, start_token: Optional[str]) -> Optional[bool]:
    """Return whether ``pid`` on this host is the process that recorded ``start_token``.

    Returns True or False when the operating system proves it, and None when it cannot tell
    (no start token recorded or readable), in which case the caller uses the heartbeat.
    """
    if IS_WINDOWS:
        return None  # os.kill(pid, 0) would terminate the process there.
    if pid is None or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        # A process with this PID exists but belongs to another user: not yet proof of life.
        pass
    info = process_info(pid)
    if info is None or not start_token:
        return None
    if info.zombie:
        return False
    return info.start_token == start_token


_PR_SET_PDEATHSIG = 1


def signal_on_parent_death(signum: int) -> bool:
    """Ask Linux to send ``signum`` to this process when its parent dies.

    Returns False where the platform offers no such request; callers then watch
    ``os.getppid()`` instead.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signum)) == 0
    except (OSError, AttributeError):
        return False


# --- macOS --------------------------------------------------------------------------------
# NOTE: the macOS path reads struct kinfo_proc through sysctl with offsets for 64-bit macOS;
# it has not been run on macOS by this project's CI, which is Linux only.

_CTL_KERN = 1
_KERN_PROC = 14
_KERN_PROC_PID = 1
_KERN_BOOTTIME = 21
_KINFO_PROC_SIZE = 648
_P_STARTTIME_OFFSET = 0  # kp_proc.p_un.__p_starttime (struct timeval)
_P_STAT_OFFSET = 36  # kp_proc.p_stat (char)
_SZOMB = 5


@functools.lru_cache(maxsize=1)
def _libc():
    return ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def _sysctl(mib: list, size: int) -> Optional[bytes]:
    names = (ctypes.c_int * len(mib))(*mib)
    buffer = ctypes.create_string_buffer(size)
    length = ctypes.c_size_t(size)
    if _libc().sysctl(names, len(mib), buffer, ctypes.byref(length), None, 0) != 0:
        return None
    return buffer.raw[: length.value]


def _macos_process_info(pid: int) -> Optional[ProcessInfo]:
    raw = _sysctl([_CTL_KERN, _KERN_PROC, _KERN_PROC_PID, pid], _KINFO_PROC_SIZE)
    if not raw or len(raw) < _KINFO_PROC_SIZE:
        return None
    seconds = int.from_bytes(raw[_P_STARTTIME_OFFSET:_P_STARTTIME_OFFSET + 8], sys.byteorder)
    micros = int.from_bytes(raw[_P_STARTTIME_OFFSET + 8:_P_STARTTIME_OFFSET + 16], sys.byteorder)
    return ProcessInfo(start_token=f"{seconds}.{micros:06d}", zombie=raw[_P_STAT_OFFSET] == _SZOMB)


def _macos_boot_time() -> str:
    raw = _sysctl([_CTL_KERN, _KERN_BOOTTIME], 16)
    if not raw:
        return ""
    return str(int.from_bytes(raw[:8], sys.byteorder))
