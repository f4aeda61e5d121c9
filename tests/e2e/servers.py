"""Prosody 0.12 and ejabberd 23.01, each started from Debian's packages with a config rendered
from `templates/` into a temp dir, on free loopback ports, and stopped as a process group."""

from __future__ import annotations

import os
import re
import shutil
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from processes import Process, free_port, port_accepts, run, wait_for

TEMPLATES = Path(__file__).resolve().parent / "templates"
DOMAIN = "localhost"
COMPONENT_JID = "push.localhost"
PUSH_MAX_ERRORS = 2  # Prosody: cancels in a row before it drops a registration


def installed(program: str) -> str:
    path = shutil.which(program) or (f"/usr/sbin/{program}" if Path(f"/usr/sbin/{program}").exists() else None)
    if path is None:
        raise AssertionError(f"{program} is not installed: run scripts/install-test-deps.sh")
    return path


def render(template: str, target: Path, **values: object) -> Path:
    """Fills the `${NAME}` placeholders of a template; a missing value is an error."""
    text = (TEMPLATES / template).read_text()
    target.write_text(string.Template(text).substitute({k: str(v) for k, v in values.items()}))
    return target


@dataclass
class XmppServer:
    """What every server offers the tests."""

    kind: str
    workdir: Path
    c2s_port: int
    component_port: int
    component_secret: str
    process: Optional[Process] = None

    domain = DOMAIN
    component_jid = COMPONENT_JID
    # The process started is a wrapper script around the server (ejabberdctl).
    started_through_script = False

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        if self.process is not None:
            # SIGTERM: both servers shut down cleanly on it (ejabberd flushes Mnesia).
            self.process.stop(grace=20, spare_leader=self.started_through_script)
        wait_for(
            f"{self.kind}'s ports to close",
            lambda: not port_accepts(self.c2s_port) and not port_accepts(self.component_port),
            timeout=20,
        )

    def restart(self) -> None:
        self.stop()
        self.start()

    def register(self, user: str, password: str) -> None:
        raise NotImplementedError

    def push_disabled(self, jid: str, token: str) -> bool:
        """Whether the server itself says it dropped the push registration of `jid` for `token`."""
        raise NotImplementedError

    def wait_listening(self, timeout: float = 60) -> None:
        wait_for(
            f"{self.kind} to listen on {self.c2s_port} and {self.component_port}",
            lambda: self._check_alive() and port_accepts(self.c2s_port) and port_accepts(self.component_port),
            timeout=timeout,
            interval=0.1,
            on_timeout=self.log_tail,
        )

    def _check_alive(self) -> bool:
        if self.process is not None and not self.process.running():
            raise AssertionError(f"{self.kind} exited with {self.process.exit_code()}\n{self.log_tail()}")
        return True

    def log_tail(self, lines: int = 60) -> str:
        return self.process.log_tail(lines) if self.process else ""


class Prosody(XmppServer):
    """`prosody -F` with its config, data and log in the temp dir."""

    def __init__(self, workdir: Path, log_level: str = "debug", push_max_errors: int = PUSH_MAX_ERRORS) -> None:
        super().__init__(
            kind="prosody",
            workdir=workdir,
            c2s_port=free_port(),
            component_port=free_port(),
            component_secret="e2e-component-secret-prosody",
        )
        # `certs` is where Prosody looks for certificates; empty, as TLS is off.
        for sub in ("data", "certs"):
            (workdir / sub).mkdir(parents=True, exist_ok=True)
        self.config = render(
            "prosody.cfg.lua",
            workdir / "prosody.cfg.lua",
            DIR=workdir,
            LOG_LEVEL=log_level,
            C2S_PORT=self.c2s_port,
            COMPONENT_PORT=self.component_port,
            COMPONENT_JID=self.component_jid,
            COMPONENT_SECRET=self.component_secret,
            PUSH_MAX_ERRORS=push_max_errors,
        )

    @property
    def log_file(self) -> Path:
        return self.workdir / "prosody.log"

    def start(self) -> None:
        self.process = Process(
            "prosody",
            [installed("prosody"), "--config", str(self.config), "-F"],
            self.workdir / "prosody.stdout.log",
        ).start()
        self.wait_listening()

    def log_tail(self, lines: int = 60) -> str:
        text = self.log_file.read_text(errors="replace") if self.log_file.exists() else ""
        return (
            super().log_tail(lines)
            + f"\n--- last lines of {self.log_file} ---\n"
            + "\n".join(text.splitlines()[-lines:])
        )

    def register(self, user: str, password: str) -> None:
        run(
            [installed("prosodyctl"), "--config", str(self.config), "register", user, self.domain, password],
            f"prosodyctl register {user}",
        )

    def push_disabled(self, jid: str, token: str) -> bool:
        """mod_cloud_notify keeps a user's registrations in `cloud_notify/USER.dat` (a file that
        goes away with the last registration)."""
        user = jid.split("@", 1)[0]
        path = self.workdir / "data" / self.domain / "cloud_notify" / f"{user}.dat"
        try:
            stored = path.read_text()
        except FileNotFoundError:  # gone with the last registration, maybe while looking
            stored = ""
        return f'["node"] = "{token}"' not in stored


def link_settings(server: "XmppServer", port: int) -> dict:
    """fpush's link to `server` through the wiretap on `port`, with short test timings: the
    `component`, `timeout` and `limits` sections every end-to-end settings file starts with."""
    return {
        "component": {
            "componentHostname": server.component_jid,
            "componentKey": server.component_secret,
            "serverHostname": "127.0.0.1",
            "serverPort": port,
        },
        "timeout": {"xmppconnectionError": "1s", "keepaliveInterval": "5s", "keepaliveTimeout": "3s"},
        "limits": {"shutdownGrace": "5s"},
    }


class Ejabberd(XmppServer):
    """ejabberd in the foreground, with config, spool (Mnesia) and logs in the temp dir.

    Erlang distribution runs without epmd on a fixed free port (ERL_DIST_PORT), so nothing
    outlives the test and nothing collides with another node on the machine."""

    started_through_script = True

    def __init__(self, workdir: Path, log_level: str = "info") -> None:
        super().__init__(
            kind="ejabberd",
            workdir=workdir,
            c2s_port=free_port(),
            component_port=free_port(),
            component_secret="e2e-component-secret-ejabberd",
        )
        self.dist_port = free_port()
        self.node = f"fpush-e2e-{self.dist_port}@localhost"
        for sub in ("spool", "logs", "home"):
            (workdir / sub).mkdir(parents=True, exist_ok=True)
        self.config = render(
            "ejabberd.yml",
            workdir / "ejabberd.yml",
            LOG_LEVEL=log_level,
            C2S_PORT=self.c2s_port,
            COMPONENT_PORT=self.component_port,
            COMPONENT_JID=self.component_jid,
            COMPONENT_SECRET=self.component_secret,
        )
        (workdir / "ejabberdctl.cfg").write_text(
            f"ERLANG_NODE={self.node}\nERL_DIST_PORT={self.dist_port}\n"
            "INET_DIST_INTERFACE=127.0.0.1\nEJABBERD_BYPASS_WARNINGS=true\n"
        )
        self.ctl = self._ejabberdctl_for_current_user()

    def _ejabberdctl_for_current_user(self) -> Path:
        """Debian's ejabberdctl switches to the `ejabberd` user when run as root; a copy without
        that switch runs the node as whoever runs the tests, owning only the temp dir."""
        source = installed("ejabberdctl")
        text = Path(source).read_text()
        patched, count = re.subn(r"^INSTALLUSER=.*$", "INSTALLUSER=", text, count=1, flags=re.M)
        if count != 1:
            raise AssertionError(f"{source} has no INSTALLUSER line to adjust")
        target = self.workdir / "ejabberdctl"
        target.write_text(patched)
        target.chmod(0o755)
        return target

    def _ctl_argv(self, *args: str) -> list:
        return [
            str(self.ctl),
            "--config-dir",
            str(self.workdir),
            "--config",
            str(self.config),
            "--ctl-config",
            str(self.workdir / "ejabberdctl.cfg"),
            "--logs",
            str(self.workdir / "logs"),
            "--spool",
            str(self.workdir / "spool"),
            *args,
        ]

    def _env(self) -> dict:
        # The Erlang cookie lives in $HOME: keep it in the temp dir, shared by node and ctl calls.
        return {**os.environ, "HOME": str(self.workdir / "home")}

    @property
    def log_file(self) -> Path:
        return self.workdir / "logs" / "ejabberd.log"

    def start(self) -> None:
        self.process = Process(
            "ejabberd",
            self._ctl_argv("foreground"),
            self.workdir / "ejabberd.stdout.log",
            env=self._env(),
            cwd=self.workdir,
        ).start()
        self.wait_listening()
        self.ctl_call("status")

    def log_tail(self, lines: int = 60) -> str:
        text = self.log_file.read_text(errors="replace") if self.log_file.exists() else ""
        return (
            super().log_tail(lines)
            + f"\n--- last lines of {self.log_file} ---\n"
            + "\n".join(text.splitlines()[-lines:])
        )

    def ctl_call(self, *args: str) -> str:
        return run(self._ctl_argv(*args), f"ejabberdctl {' '.join(args)}", env=self._env())

    def register(self, user: str, password: str) -> None:
        self.ctl_call("register", user, self.domain, password)

    def push_disabled(self, jid: str, token: str) -> bool:
        """mod_push logs (at warning level) each registration it deletes after an error reply."""
        text = self.log_file.read_text(errors="replace") if self.log_file.exists() else ""
        return f"rejected notification for {jid} ({token}), disabling push" in text
