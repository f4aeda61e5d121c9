"""Fixtures for the end-to-end tests: per XMPP server (Prosody, ejabberd) one running server, a
wiretap on its component port, and fpush connected through it with real APNS and FCM modules
pointed at the fake providers. Everything started here is stopped in finalizers, also when a
test fails.

Run with the release binaries built: `python3 -m pytest -q tests/e2e`.
"""

from __future__ import annotations

import itertools

import pytest

# pytest puts this directory on sys.path (no __init__.py here), so the helpers import directly.
import xmpp_client
from fpush_daemon import Fpush, binary
from providers import FakeProvider
from servers import Ejabberd, Prosody, XmppServer, link_settings
from wiretap import Push, Wiretap

PASSWORD = "e2e-password"
RATELIMIT_WINDOW = 2.0  # seconds, for the *-limited modules


def fpush_settings(server: XmppServer, wiretap: Wiretap, apns: FakeProvider, fcm: FakeProvider) -> dict:
    """fpush's settings for one server: every module pointed at the fakes; short timers so the
    suite stays fast. Ratelimiting is off except on the `*-limited` modules, so that scenarios
    needing several pushes to one token are not slowed down by it."""
    off = {"enabled": False}
    limited = {"enabled": True, "ratelimitTime": f"{RATELIMIT_WINDOW:g}s", "ratelimitCleanupInterval": "60s"}

    def apple(auth: dict, ratelimit: dict, default: bool = False) -> dict:
        return {
            "type": "apple",
            "is_default_module": default,
            "apns": {
                **auth,
                "topic": apns.info["topic"],
                "endpoint": apns.endpoint,
                "caFilePath": apns.info["ca"],
                "requestTimeout": "2s",
            },
            "ratelimit": ratelimit,
        }

    def google(ratelimit: dict) -> dict:
        return {
            "type": "google",
            "fcm": {
                "fcmSecretPath": fcm.info["serviceAccount"],
                "endpoint": fcm.endpoint,
                "caFilePath": fcm.info["ca"],
                "requestTimeout": "2s",
            },
            "ratelimit": ratelimit,
        }

    cert = {"certFilePath": apns.info["p12"], "certPassword": apns.info["p12Password"]}
    key = {"keyFilePath": apns.info["p8"], "keyId": apns.info["keyId"], "teamId": apns.info["teamId"]}
    return {
        **link_settings(server, wiretap.port),
        "pushModules": {
            "apns": apple(cert, off, default=True),
            "apns-key": apple(key, off),
            "fcm": google(off),
            "apns-limited": apple(cert, limited),
            "fcm-limited": google(limited),
        },
    }


class Stack:
    """One XMPP server with fpush attached, and the helpers the scenarios are written in."""

    def __init__(self, server: XmppServer, wiretap: Wiretap, fpush: Fpush, apns: FakeProvider, fcm: FakeProvider):
        self.server = server
        self.wiretap = wiretap
        self.fpush = fpush
        self.providers = {"apns": apns, "fcm": fcm}
        self._numbers = itertools.count(1)
        self.sender = self.new_user("sender")

    @property
    def kind(self) -> str:
        return self.server.kind

    def new_user(self, prefix: str = "user") -> str:
        name = f"{prefix}{next(self._numbers)}"
        self.server.register(name, PASSWORD)
        return f"{name}@{self.server.domain}"

    def token(self, prefix: str, platform: str) -> str:
        """A token unique to this test run whose prefix tells the fake provider how to answer."""
        return f"{prefix}-{self.kind}-{platform}-{next(self._numbers)}"

    def enable_push(self, user: str, token: str, push_module: str, then: str = "log_out") -> None:
        xmpp_client.enable_push(
            user, PASSWORD, self.server.c2s_port, self.server.component_jid, token, push_module, then=then
        )

    def send(self, to: str, *bodies: str) -> None:
        xmpp_client.send_messages(self.sender, PASSWORD, self.server.c2s_port, to, bodies)

    def registered_user_with_push(self, prefix: str, platform: str, module: str, then: str = "log_out"):
        user = self.new_user()
        token = self.token(prefix, platform)
        self.enable_push(user, token, module, then=then)
        return user, token

    def message_and_reply(self, to: str, token: str, expected_total: int) -> Push:
        """Sends one message to `to` and returns the push it caused, once fpush has answered it."""
        self.send(to, f"message {expected_total}")
        pushes = self.wiretap.wait_for_replies(token, expected_total)
        assert len(pushes) == expected_total, self.wiretap.summary()
        return pushes[-1]

    def barrier(self) -> None:
        """Returns once the server has handled everything the sender sent before: a message to
        a control user whose push is then observed (the server handles one sender's messages,
        and their pushes, in order)."""
        user, token = self.registered_user_with_push("ok-barrier", "apns", "apns")
        self.send(user, "barrier")
        self.wiretap.wait_for_replies(token, 1)

    def restart_fpush(self) -> int:
        code = self.fpush.stop()
        before = self.wiretap.handshakes()
        self.fpush.start()
        self.wiretap.wait_for_handshake(after=before)
        return code

    def diagnostics(self) -> str:
        return "\n".join([self.wiretap.summary(), self.fpush.log_tail(), self.server.log_tail(30)])


@pytest.fixture(scope="session")
def fake_providers(tmp_path_factory):
    started = []
    try:
        for kind in ("apns", "fcm"):
            started.append(FakeProvider(kind, binary(f"fake-{kind}"), tmp_path_factory.mktemp(f"fake-{kind}")).start())
        yield {p.kind: p for p in started}
    finally:
        for provider in started:
            provider.stop()


@pytest.fixture(scope="session", params=["prosody", "ejabberd"])
def stack(request, fake_providers, tmp_path_factory):
    workdir = tmp_path_factory.mktemp(request.param)
    server = (Prosody if request.param == "prosody" else Ejabberd)(workdir / "server")
    wiretap = None
    fpush = None
    try:
        server.start()
        wiretap = Wiretap(server.component_port).start()
        settings = fpush_settings(server, wiretap, fake_providers["apns"], fake_providers["fcm"])
        (workdir / "fpush").mkdir()
        fpush = Fpush(workdir / "fpush", settings).start()
        wiretap.wait_for_handshake()
        yield Stack(server, wiretap, fpush, fake_providers["apns"], fake_providers["fcm"])
    finally:
        if fpush is not None:
            fpush.stop()
        if wiretap is not None:
            wiretap.stop()
        server.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed:
        # Every scenario fixture (`stack`, test_p2's `p2` and `shared`) offers `diagnostics()`.
        for name in ("stack", "p2", "shared"):
            if name in item.funcargs:
                report.sections.append(("fpush, wiretap and server at failure", item.funcargs[name].diagnostics()))
