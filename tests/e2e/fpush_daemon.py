"""fpush itself, started from an optimised build with a settings file written for the test.

The binaries come from `target/release` unless FPUSH_BIN_DIR names another build directory
(the test command uses the `ci` profile's `target/ci`)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any, Dict, Optional

from processes import Process

REPO = Path(__file__).resolve().parents[2]
BIN_DIR = Path(os.environ.get("FPUSH_BIN_DIR", REPO / "target" / "release"))


def binary(name: str) -> Path:
    path = BIN_DIR / name
    if not os.access(path, os.X_OK):
        raise AssertionError(
            f"{path} is missing: build it first with `cargo build --release -p fpush -p fpush-testkit`"
        )
    return path


class Fpush:
    def __init__(self, workdir: Path, settings: Dict[str, Any], rust_log: str = "info") -> None:
        self.workdir = workdir
        self.settings_path = workdir / "settings.json"
        self.settings_path.write_text(json.dumps(settings, indent=2))
        self.rust_log = rust_log
        self.process: Optional[Process] = None
        self.starts = 0

    @property
    def log_path(self) -> Path:
        return self.workdir / f"fpush-{self.starts}.log"

    def start(self) -> "Fpush":
        self.starts += 1
        env = {**os.environ, "RUST_LOG": self.rust_log, "RUST_BACKTRACE": "1"}
        self.process = Process("fpush", [str(binary("fpush")), str(self.settings_path)], self.log_path, env=env).start()
        return self

    def stop(self) -> Optional[int]:
        """SIGTERM, as systemd would; returns the exit code."""
        if self.process is None:
            return None
        return self.process.stop(grace=20, signum=signal.SIGTERM)

    def assert_running(self) -> None:
        if self.process is None or not self.process.running():
            code = None if self.process is None else self.process.exit_code()
            raise AssertionError(f"fpush is not running (exit code {code})\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        return self.process.log_tail(lines) if self.process else ""
