"""Child processes for the end-to-end tests: free loopback ports, process groups that are always
torn down, and waiting on conditions with a deadline instead of fixed sleeps."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Callable, Optional, Sequence, TypeVar

T = TypeVar("T")


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_for(
    what: str,
    check: Callable[[], Optional[T]],
    timeout: float,
    interval: float = 0.05,
    on_timeout: Callable[[], str] = lambda: "",
) -> T:
    """Polls `check` until it returns something truthy; fails with `what` after `timeout` seconds.

    Used only for effects in other processes (a port opening, a line landing in a record file),
    which offer nothing to wait on directly."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() >= deadline:
            detail = on_timeout()
            raise AssertionError(
                f"timed out after {timeout:.0f}s waiting for {what}" + (f"\n{detail}" if detail else "")
            )
        time.sleep(interval)


class Process:
    """A child started in its own process group, so that stopping it also stops whatever it
    spawned (ejabberdctl starts an Erlang VM, for instance). Output goes to a log file."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        env: Optional[dict] = None,
        cwd: Optional[Path] = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = env
        self.cwd = cwd
        self.popen: Optional[subprocess.Popen] = None

    def start(self) -> "Process":
        log = open(self.log_path, "ab")
        try:
            self.popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
            )
        finally:
            log.close()
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None, f"{self.name} was never started"
        return self.popen.pid

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def exit_code(self) -> Optional[int]:
        return None if self.popen is None else self.popen.poll()

    def stop(self, grace: float = 10.0, signum: int = signal.SIGTERM, spare_leader: bool = False) -> Optional[int]:
        """Asks the whole group to stop and waits until every process in it is gone; kills what
        is left after `grace` seconds. Returns the exit code of the process started.

        `spare_leader`: the leader is a wrapper script that waits for the real program: signal
        only the leader's children, so that the script sees the program end, reaps it and exits
        by itself (a script killed first would leave the program to end unreaped, a zombie)."""
        if self.popen is None:
            return None
        pgid = self.popen.pid  # the leader's pid is the group id (start_new_session)
        children = [pid for pid, parent in _group_members(pgid) if parent == pgid] if spare_leader else []
        if children:
            for pid in children:
                _signal_pid(pid, signum)
        else:
            _signal_group(pgid, signum)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if self.popen.poll() is not None and not _group_members(pgid):
                return self.popen.returncode
            time.sleep(0.05)
        _signal_group(pgid, signal.SIGKILL)
        self.popen.wait(timeout=10)
        return self.popen.returncode

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_text().splitlines()
        return f"--- last lines of {self.log_path} ---\n" + "\n".join(text[-lines:])


def _group_members(pgid: int) -> list:
    """Live (not zombie) processes of a process group as (pid, parent pid), read from /proc."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Fields after the command name (which may contain spaces) start after the last ')'.
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 2 and fields[0] != "Z" and int(fields[2]) == pgid:
            members.append((int(entry.name), int(fields[1])))
    return members


def _signal_pid(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def run(argv: Sequence[str], what: str, env: Optional[dict] = None, timeout: float = 60) -> str:
    """Runs a short command and returns its output; fails with the output when it fails."""
    done = subprocess.run(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        timeout=timeout,
        start_new_session=True,
    )
    output = done.stdout.decode(errors="replace")
    if done.returncode != 0:
        raise AssertionError(f"{what} failed (exit {done.returncode}): {' '.join(argv)}\n{output}")
    return output
