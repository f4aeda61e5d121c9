"""The fake APNS and FCM servers (`fake-apns`, `fake-fcm` from fpush-testkit), run as processes:
HTTP/2 over TLS with a test CA, answering by token prefix, recording every request they get.

Token prefixes (the fakes' contract): `dead…` unregistered, `baddevice…` bad token,
`unavailable…` 503, `throttled…` 429, `stall…` no answer, `unavailable-once…` / `throttled-once…`
that error first and then answer 200, `ok…` 200; any other token to fake-apns must look like
Apple's (64 to 200 hex digits), else it is refused as Apple refuses it (400 BadDeviceToken).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional

from processes import Process, wait_for


class FakeProvider:
    def __init__(self, kind: str, binary: Path, workdir: Path) -> None:
        self.kind = kind  # "apns" or "fcm"
        self.binary = binary
        self.workdir = workdir
        self.record_path = workdir / "requests.jsonl"
        self.stdout_path = workdir / "stdout.log"
        self.process: Optional[Process] = None
        self.info: Dict[str, Any] = {}

    def start(self) -> "FakeProvider":
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.process = Process(
            f"fake-{self.kind}",
            [
                str(self.binary),
                "--listen",
                "127.0.0.1:0",
                "--dir",
                str(self.workdir / "credentials"),
                "--record",
                str(self.record_path),
            ],
            self.stdout_path,
        ).start()
        self.info = wait_for(
            f"fake-{self.kind} to announce its port",
            self._announcement,
            timeout=30,
            on_timeout=lambda: self.process.log_tail() if self.process else "",
        )
        return self

    def _announcement(self) -> Optional[Dict[str, Any]]:
        if self.process is not None and not self.process.running():
            raise AssertionError(f"fake-{self.kind} exited with {self.process.exit_code()}\n{self.process.log_tail()}")
        for line in self.stdout_path.read_text(errors="replace").splitlines():
            line = line.strip()
            if line.startswith("{"):
                try:
                    info = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if "port" in info:
                    return info
        return None

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(grace=5)

    @property
    def endpoint(self) -> str:
        # The fake announces the URL its certificate is valid for.
        return self.info.get("endpoint") or f"https://localhost:{self.info['port']}"

    def requests(self, token: Optional[str] = None) -> List[Dict[str, Any]]:
        """Every request recorded so far (optionally only those for `token`), oldest first."""
        if not self.record_path.exists():
            return []
        found = []
        for line in self.record_path.read_text(errors="replace").splitlines():
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line still being written
            if token is None or record.get("token") == token:
                found.append(record)
        return found

    def wait_for_requests(self, token: str, count: int, timeout: float = 20) -> List[Dict[str, Any]]:
        return wait_for(
            f"{count} request(s) for token {token} at fake-{self.kind}",
            lambda: (lambda found: found if len(found) >= count else None)(self.requests(token)),
            timeout=timeout,
            on_timeout=lambda: f"fake-{self.kind} recorded: {self.requests(token)}",
        )


def header(record: Dict[str, Any], name: str) -> Optional[str]:
    """A request header from a record, whatever the case of its name."""
    headers = record.get("headers") or {}
    if isinstance(headers, dict):
        for key, value in headers.items():
            if key.lower() == name.lower():
                return value[0] if isinstance(value, list) and value else value
    elif isinstance(headers, list):
        for pair in headers:
            if isinstance(pair, (list, tuple)) and len(pair) == 2 and str(pair[0]).lower() == name.lower():
                return pair[1]
    return None
