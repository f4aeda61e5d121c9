"""Conversations-family apps against real Prosody 0.12 and ejabberd 23.01 (issue 16).

The client does what such an app does: it runs `register-push-fcm` at fpush's JID through its own
server (an XEP-0050 command in one IQ), enables push with the `jid`, `node` and `secret` answered
(publish-options with only `secret`), and goes offline; another user messages it. The wiretap
shows the push IQs and fpush's replies, the fake FCM server what reached the provider.

fpush runs a p2 module for FCM with a SQLite store, next to a default APNS module that a push by
node must never fall through to. Prosody disables a registration after one error here
(`push_max_errors = 1`), as ejabberd does. The two-instance test shares registrations through
Redis and runs on ejabberd, which accepts several connections for one component.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import secrets
from typing import List, Optional, Sequence, Tuple

import pytest

import xmpp_client
from fpush_daemon import Fpush
from processes import wait_for
from providers import FakeProvider
from servers import Ejabberd, Prosody, XmppServer, link_settings
from test_cluster import RedisServer
from wiretap import Push, Wiretap

PASSWORD = "p2-password"
P2_MODULE = "fcm-p2"
REGISTER = "register-push-fcm"
UNREGISTER = "unregister-push-fcm"
TIMEOUT = 10.0  # seconds to wait for a push and its reply
FCM_TOKEN_LEN = 163  # what FCM hands out today

Fields = Sequence[Tuple[str, str]]


def device_hash(bare_jid: str, device_id: str) -> str:
    """The `account` a p2 push carries, computed here independently of fpush."""
    return hashlib.sha1((bare_jid + "\0" + device_id).encode()).hexdigest()


def p2_settings(server: XmppServer, wiretap: Wiretap, apns: FakeProvider, fcm: FakeProvider, store: dict,
                redis: Optional[dict] = None) -> dict:
    """A p2 FCM module and a default APNS module, both pointed at the fakes; ratelimit off."""
    off = {"enabled": False}
    settings = {
        **link_settings(server, wiretap.port),
        "store": store,
        # The store is made for the test: without this, a node it lacks is answered `wait` for a
        # day (it might be the wrong store; tests/p2_dispatcher.rs checks that), not `cancel`.
        "modules": {"retiredGrace": "0s"},
        "pushModules": {
            P2_MODULE: {
                "type": "google",
                "registration": {"protocol": "p2"},
                "fcm": {
                    "fcmSecretPath": fcm.info["serviceAccount"],
                    "endpoint": fcm.endpoint,
                    "caFilePath": fcm.info["ca"],
                    "requestTimeout": "2s",
                },
                "ratelimit": off,
            },
            "apns": {
                "type": "apple",
                "is_default_module": True,
                "apns": {
                    "certFilePath": apns.info["p12"],
                    "certPassword": apns.info["p12Password"],
                    "topic": apns.info["topic"],
                    "endpoint": apns.endpoint,
                    "caFilePath": apns.info["ca"],
                    "requestTimeout": "2s",
                },
                "ratelimit": off,
            },
        },
    }
    if redis is not None:
        settings["redis"] = redis
    return settings


def fcm_message(record: dict) -> dict:
    body = record.get("body")
    if isinstance(body, str):
        body = json.loads(body)
    return body["message"]


class P2Stack:
    """One XMPP server, a wiretap on its component port, fpush instances behind it, and the
    steps the scenarios are written in."""

    def __init__(self, server: XmppServer, wiretap: Wiretap, instances: List[Fpush], providers: dict) -> None:
        self.server = server
        self.wiretap = wiretap
        self.instances = instances
        self.fcm: FakeProvider = providers["fcm"]
        self.apns: FakeProvider = providers["apns"]
        self._numbers = itertools.count(1)
        self.sender = self.new_user("sender")

    @property
    def kind(self) -> str:
        return self.server.kind

    def new_user(self, prefix: str = "phone") -> str:
        name = f"{prefix}{next(self._numbers)}"
        self.server.register(name, PASSWORD)
        return f"{name}@{self.server.domain}"

    def fcm_token(self, prefix: str) -> str:
        """A token shaped like an FCM registration token, unique in the session (the fake FCM
        server outlives each stack); its prefix tells the fake how to answer."""
        head = f"{prefix}-{self.kind}-{secrets.token_hex(4)}:APA91b"
        return head + ("Xq7_Zk-3" * 24)[: FCM_TOKEN_LEN - len(head)]

    def register_and_enable(self, user: str, token: str, device_id: str,
                            secret: Optional[str] = None) -> xmpp_client.CommandReply:
        reply = xmpp_client.register_and_enable(
            user, PASSWORD, self.server.c2s_port, self.server.component_jid, REGISTER,
            [("token", token), ("device-id", device_id)], secret=secret,
        )
        assert reply.completed, f"{reply}\n{self.diagnostics()}"
        return reply

    def commands(self, user: str, commands: Sequence[Tuple[str, Fields]],
                 action: str = "execute") -> List[xmpp_client.CommandReply]:
        return xmpp_client.execute_commands(user, PASSWORD, self.server.c2s_port, self.server.component_jid,
                                            commands, action)

    def enable(self, user: str, node: str, secret: str) -> None:
        xmpp_client.enable_push(user, PASSWORD, self.server.c2s_port, self.server.component_jid, node, None,
                                secret=secret)

    def message(self, to: str, node: str, expected_total: int) -> Push:
        """One message to `to`; returns the push it caused once fpush has answered it."""
        xmpp_client.send_messages(self.sender, PASSWORD, self.server.c2s_port, to, [f"message {expected_total}"])
        pushes = self.wiretap.wait_for_replies(node, expected_total, timeout=TIMEOUT)
        assert len(pushes) == expected_total, self.wiretap.summary()
        return pushes[-1]

    def diagnostics(self) -> str:
        return "\n".join([self.wiretap.summary()] + [f.log_tail() for f in self.instances]
                         + [self.server.log_tail(30)])


def assert_reply(push: Push, expected: Tuple[str, Optional[str], Optional[str]]) -> None:
    reply = push.reply
    got = None if reply is None else (reply.kind, reply.error_type, reply.condition)
    assert got == expected, push.describe()


@pytest.fixture(scope="module", params=["prosody", "ejabberd"])
def p2(request, fake_providers, tmp_path_factory):
    workdir = tmp_path_factory.mktemp(f"p2-{request.param}")
    server = (
        Prosody(workdir / "server", push_max_errors=1) if request.param == "prosody" else Ejabberd(workdir / "server")
    )
    wiretap = None
    fpush = None
    try:
        server.start()
        wiretap = Wiretap(server.component_port).start()
        (workdir / "fpush").mkdir()
        store = {"backend": "sqlite", "path": str(workdir / "fpush" / "registrations.sqlite3")}
        settings = p2_settings(server, wiretap, fake_providers["apns"], fake_providers["fcm"], store)
        fpush = Fpush(workdir / "fpush", settings).start()
        wiretap.wait_for_handshake()
        yield P2Stack(server, wiretap, [fpush], fake_providers)
    finally:
        if fpush is not None:
            fpush.stop()
        if wiretap is not None:
            wiretap.stop()
        server.stop()


def test_registered_phone_gets_one_fcm_message_with_its_account_hash(p2: P2Stack):
    user = p2.new_user()
    token = p2.fcm_token("ok")
    device_id = secrets.token_hex(8)

    reply = p2.register_and_enable(user, token, device_id)

    assert reply.fields["jid"] == p2.server.component_jid, reply
    assert len(reply.fields["node"]) == 12 and len(reply.fields["secret"]) == 24, reply
    push = p2.message(user, reply.fields["node"], 1)
    assert_reply(push, ("result", None, None))
    assert push.push_module is None, "a p2 push names no module"
    [request] = p2.fcm.requests(token)
    message = fcm_message(request)
    assert message["token"] == token
    assert message["data"]["account"] == device_hash(user, device_id)
    assert message["android"]["priority"].lower() == "high"
    assert p2.apns.requests(reply.fields["node"]) == []


def test_registering_again_answers_the_same_node_and_secret(p2: P2Stack):
    user = p2.new_user()
    device_id = secrets.token_hex(8)

    first, second = p2.commands(user, [
        (REGISTER, [("token", p2.fcm_token("ok")), ("device-id", device_id)]),
        (REGISTER, [("token", p2.fcm_token("ok")), ("device-id", device_id)]),
    ])

    assert first.completed and second.completed, (first, second)
    assert (second.fields["node"], second.fields["secret"]) == (first.fields["node"], first.fields["secret"])


def test_push_with_a_wrong_secret_is_refused_forbidden_without_a_provider_call(p2: P2Stack):
    user = p2.new_user()
    token = p2.fcm_token("ok")

    reply = p2.register_and_enable(user, token, secrets.token_hex(8), secret="not-the-secret-we-were-given")

    push = p2.message(user, reply.fields["node"], 1)
    assert_reply(push, ("error", "auth", "forbidden"))
    assert p2.fcm.requests(token) == []


def test_push_for_an_unknown_node_is_item_not_found_and_never_reaches_a_provider(p2: P2Stack):
    # A node fpush never handed out, with a secret and no pushModule: it must not fall through to
    # the default (APNS) module as if the node were a device token.
    user = p2.new_user()
    node = f"unk{secrets.token_hex(5)}"[:12]
    p2.enable(user, node, "some-secret-of-24-chars")

    push = p2.message(user, node, 1)

    assert_reply(push, ("error", "cancel", "item-not-found"))
    assert p2.apns.requests(node) == [] and p2.fcm.requests(node) == []


def test_unregistered_token_deletes_the_registration_and_the_server_disables_push(p2: P2Stack):
    user = p2.new_user()
    token = p2.fcm_token("dead")
    device_id = secrets.token_hex(8)
    node = p2.register_and_enable(user, token, device_id).fields["node"]

    push = p2.message(user, node, 1)

    assert_reply(push, ("error", "cancel", "item-not-found"))
    [request] = p2.fcm.requests(token)
    assert request["reason"] == "UNREGISTERED", request
    wait_for(f"{p2.kind} to disable push for {user}", lambda: p2.server.push_disabled(user, node), timeout=TIMEOUT,
             on_timeout=p2.diagnostics)
    # fpush deleted the registration: unregistering it finds nothing.
    [gone] = p2.commands(user, [(UNREGISTER, [("device-id", device_id)])])
    assert (gone.kind, gone.error_type, gone.condition) == ("error", "cancel", "item-not-found"), gone


def test_unregister_completes_then_the_push_and_a_second_unregister_find_nothing(p2: P2Stack):
    user = p2.new_user()
    token = p2.fcm_token("ok")
    device_id = secrets.token_hex(8)
    node = p2.register_and_enable(user, token, device_id).fields["node"]

    [done] = p2.commands(user, [(UNREGISTER, [("device-id", device_id)])])
    assert done.completed, done

    push = p2.message(user, node, 1)
    assert_reply(push, ("error", "cancel", "item-not-found"))
    assert p2.fcm.requests(token) == []
    [again] = p2.commands(user, [(UNREGISTER, [("device-id", device_id)])])
    assert (again.kind, again.error_type, again.condition) == ("error", "cancel", "item-not-found"), again


def test_bad_register_commands_are_refused(p2: P2Stack):
    user = p2.new_user()
    device_id = secrets.token_hex(8)
    token = p2.fcm_token("ok")

    replies = p2.commands(user, [
        (REGISTER, [("device-id", device_id)]),
        (REGISTER, [("token", token), ("device-id", "")]),
        (REGISTER, [("token", token), ("device-id", device_id), ("muc", f"room@conference.{p2.server.domain}/nick")]),
        # The APNS module serves token-in-node pushes only: no p2 module for APNS.
        ("register-push-apns", [("token", "a" * 64), ("device-id", device_id)]),
    ])

    got = [(r.kind, r.error_type, r.condition) for r in replies]
    assert got == [("error", "modify", "bad-request")] * 3 + [("error", "cancel", "item-not-found")], replies
    assert p2.fcm.requests(token) == []


def test_a_canceled_register_command_is_answered_canceled_and_registers_nothing(p2: P2Stack):
    user = p2.new_user()
    device_id = secrets.token_hex(8)
    fields = [("token", p2.fcm_token("ok")), ("device-id", device_id)]

    [canceled] = p2.commands(user, [(REGISTER, fields)], action="cancel")
    assert (canceled.kind, canceled.status, canceled.fields) == ("result", "canceled", {}), canceled

    [gone] = p2.commands(user, [(UNREGISTER, [("device-id", device_id)])])
    assert (gone.kind, gone.error_type, gone.condition) == ("error", "cancel", "item-not-found"), gone


def registered_phone(p2: P2Stack) -> Tuple[str, str, str, str]:
    """A new user whose phone registered (FCM token answered `ok`) and enabled push: the user,
    token, device id and node."""
    user = p2.new_user()
    token = p2.fcm_token("ok")
    device_id = secrets.token_hex(8)
    node = p2.register_and_enable(user, token, device_id).fields["node"]
    return user, token, device_id, node


def restart_with(p2: P2Stack, fpush: Fpush, settings: Optional[dict] = None) -> None:
    """Restarts `fpush` (with `settings` instead of its own, if given) and waits for its link."""
    before = p2.wiretap.handshakes()
    assert fpush.stop() == 0, fpush.log_tail()
    if settings is not None:
        fpush.settings_path.write_text(json.dumps(settings, indent=2))
    fpush.start()
    p2.wiretap.wait_for_handshake(after=before)


def test_registration_survives_an_fpush_restart(p2: P2Stack):
    user, token, device_id, node = registered_phone(p2)
    [fpush] = p2.instances

    restart_with(p2, fpush)

    push = p2.message(user, node, 1)
    assert_reply(push, ("result", None, None))
    [request] = p2.fcm.requests(token)
    assert fcm_message(request)["data"]["account"] == device_hash(user, device_id)


def test_a_store_path_changed_by_mistake_ends_no_registration(p2: P2Stack):
    # fpush restarted on a new, empty store (`store.path` changed by mistake), with the default
    # grace: a push for a registration only the old store holds is answered wait, which neither
    # server counts against it (Prosody here drops a registration at its first other error),
    # and with the old path back the same registration is pushed to.
    user, token, _, node = registered_phone(p2)
    [fpush] = p2.instances
    settings = json.loads(fpush.settings_path.read_text())
    mistaken = {key: value for key, value in settings.items() if key != "modules"}
    mistaken["store"] = {"backend": "sqlite", "path": str(fpush.workdir / "elsewhere.sqlite3")}

    restart_with(p2, fpush, mistaken)
    try:
        push = p2.message(user, node, 1)
        assert_reply(push, ("error", "wait", "item-not-found"))
        assert p2.fcm.requests(token) == []
        assert not p2.server.push_disabled(user, node)
    finally:
        restart_with(p2, fpush, settings)

    push = p2.message(user, node, 2)
    assert_reply(push, ("result", None, None))
    assert len(p2.fcm.requests(token)) == 1


# Two instances sharing registrations through Redis (ejabberd: several component connections).


@pytest.fixture(scope="module")
def shared(fake_providers, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("p2-redis")
    server = Ejabberd(workdir / "ejabberd")
    redis = RedisServer(workdir / "redis")
    wiretap = None
    instances: List[Fpush] = []
    try:
        redis.start()
        server.start()
        wiretap = Wiretap(server.component_port).start()
        settings = p2_settings(server, wiretap, fake_providers["apns"], fake_providers["fcm"], {"backend": "redis"},
                               redis={"url": redis.url, "keyPrefix": "fpush-e2e-p2:"})
        for name in ("a", "b"):
            (workdir / f"fpush-{name}").mkdir()
            instances.append(Fpush(workdir / f"fpush-{name}", settings))
        yield P2Stack(server, wiretap, instances, fake_providers)
    finally:
        for fpush in instances:
            fpush.stop()
        if wiretap is not None:
            wiretap.stop()
        server.stop()
        redis.stop()


def test_registered_through_one_instance_pushed_through_the_other(shared: P2Stack):
    a, b = shared.instances
    user = shared.new_user()
    token = shared.fcm_token("ok")
    device_id = secrets.token_hex(8)

    # Only A is connected while the client registers, only B when the push comes.
    a.start()
    shared.wiretap.wait_for_handshake(after=0)
    node = shared.register_and_enable(user, token, device_id).fields["node"]
    b.start()
    shared.wiretap.wait_for_handshake(after=1)
    assert a.stop() == 0, a.log_tail()

    push = shared.message(user, node, 1)

    assert_reply(push, ("result", None, None))
    [command] = shared.wiretap.commands(REGISTER)
    assert (command.connection, push.stanza.connection) == (1, 2), shared.diagnostics()
    [request] = shared.fcm.requests(token)
    assert fcm_message(request)["data"]["account"] == device_hash(user, device_id)
