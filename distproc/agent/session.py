"""Ending the SSH session an agent was started over, once nobody is at its other end.

A coordinator cut off from a host (a network partition) leaves the host's sshd
holding the TCP connection: sshd has no ClientAlive by default, so the session
process and the agent on its channel would wait for the connection's death,
hours later. When the agent knows the channel is dead (its run was stopped
because no coordinator followed it for the orphan timeout: runner.py), it
ends the session itself: SIGTERM to the sshd process serving the connection,
which makes sshd exit and the kernel drop the connection.

Only a no-tty SSH session that is the agent's parent (or its shell's parent)
is ever signalled: an agent started any other way (`ansible_connection:
local`, a login shell, a test) finds no such process and leaves everything as is.
An agent call served by the warm agent (warm.py) has no SSH session of its
own: its connection's far end is sshd's process of the coordinator's
connection (forwarding the channel to the socket), which is what it ends.
"""

from __future__ import annotations

import os
import re
import signal
from typing import Callable, Optional, Tuple

# What may stand between sshd and the agent: the login shell that ran the command.
SHELLS = frozenset({"sh", "dash", "bash", "zsh", "ksh", "mksh", "ash", "busybox"})
SSHD = frozenset({"sshd", "sshd-session"})
# The process title of the (unprivileged) process of one connection's no-tty
# session: "sshd: user@notty", or "sshd-session: user@notty" from OpenSSH 9.8.
# Never the listener ("sshd: /usr/sbin/sshd ... [listener]"), never a privileged
# monitor ("sshd: user [priv]"), never an interactive login ("sshd: user@pts/0").
SESSION_TITLE = re.compile(r"^sshd(-session)?: \S+@notty$")
# The same process of a connection that forwards to the warm agent's socket and
# has no session: "sshd: user" (or "user@notty" once it has one as well).
CONNECTION_TITLE = re.compile(r"^sshd(-session)?: [^\s\[\]@]+(@notty)?$")

#: Set by the warm agent (warm.py) in the child serving one call: the pid at the
#: other end of its socket, from SO_PEERCRED.
PEER_PID: Optional[int] = None


def _stat(pid: int) -> Optional[Tuple[str, int]]:
    """(comm, parent pid) of a process, from /proc."""
    try:
        with open("/proc/{}/stat".format(pid), "rb") as fh:
            line = fh.read().decode("utf-8", "replace")
    except OSError:
        return None
    # comm is in parentheses and may hold spaces or parentheses itself.
    open_at, close_at = line.find("("), line.rfind(")")
    fields = line[close_at + 2 :].split()
    if open_at < 0 or close_at < 0 or len(fields) < 2:
        return None
    return line[open_at + 1 : close_at], int(fields[1])


def _title(pid: int) -> str:
    try:
        with open("/proc/{}/cmdline".format(pid), "rb") as fh:
            raw = fh.read(4096)
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode("utf-8", "replace").strip()


def ssh_session_pid() -> Optional[int]:
    """The sshd process of the SSH session this agent runs in, or None."""
    if PEER_PID is not None:
        return peer_session_pid(PEER_PID, _stat, _title)
    return session_pid_from(os.getppid(), _stat, _title)


def peer_session_pid(
    peer: int, stat: Callable[[int], Optional[Tuple[str, int]]], title: Callable[[int], str]
) -> Optional[int]:
    """The warm agent's peer, if it is sshd's process of one connection (never the listener or a monitor)."""
    info = stat(peer)
    if info is None or peer <= 1 or info[0] not in SSHD:
        return None
    return peer if CONNECTION_TITLE.match(title(peer)) else None


def session_pid_from(
    parent: int, stat: Callable[[int], Optional[Tuple[str, int]]], title: Callable[[int], str]
) -> Optional[int]:
    """The no-tty sshd session process among `parent` and, if that is a shell, its parent."""
    pid = parent
    for _ in range(2):  # the parent, or the parent of the shell that ran us
        info = stat(pid)
        if info is None or pid <= 1:
            return None
        comm, grandparent = info
        if comm in SSHD:
            return pid if SESSION_TITLE.match(title(pid)) else None
        if comm not in SHELLS:
            return None
        pid = grandparent
    return None


def end_ssh_session() -> Optional[int]:
    """SIGTERM the sshd process of this agent's SSH session; its pid, or None if there was none to end."""
    pid = ssh_session_pid()
    if pid is None:
        return None
    try:
        os.kill(pid, signal.SIGTERM)
    except OSError:
        return None  # gone already, or not ours to signal
    return pid
