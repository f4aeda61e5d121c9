"""Siskin-family apps (the Tigase push protocol) against real Prosody 0.12 and ejabberd 23.01.

The client does what Siskin IM or Snikket iOS does: it finds fpush's provider id by disco#info
on fpush's JID, runs `register-device` there through its own server (one XEP-0050 command IQ),
enables push with the answered node (no pushModule, no secret) and goes offline; another user
messages it. The fake APNS server must receive one request to the registered token whose payload
carries `account` = the user's bare JID. After `unregister-device` the next push is answered
`item-not-found`. These servers send plain summaries (their Debian builds do not encrypt);
encrypted payloads, VoIP and the priority element are covered against the fake XMPP server in
tests/tigase_dispatcher.rs and tests/tigase_path.rs.
"""

from __future__ import annotations

import itertools
import json
import secrets
import xml.etree.ElementTree as ET
from typing import Dict, List, Tuple

import pytest

import xmpp_client
from fpush_daemon import Fpush, binary
from providers import FakeProvider
from servers import Ejabberd, Prosody, XmppServer, link_settings
from wiretap import Wiretap

PASSWORD = "tigase-password"
PROVIDER = "snikket:apns:1"
NS_COMMANDS = "http://jabber.org/protocol/commands"
NS_DATA = "jabber:x:data"
NS_PUSH = "urn:xmpp:push:0"
TIMEOUT = 10.0


def tigase_settings(server: XmppServer, wiretap: Wiretap, apns: FakeProvider, store: str) -> dict:
    """One tigase APNS module (key auth) on the fake APNS server; ratelimit off."""
    return {
        **link_settings(server, wiretap.port),
        "store": {"backend": "sqlite", "path": store},
        # A store made for the test answers `cancel` for registrations it lacks only past this.
        "modules": {"retiredGrace": "0s"},
        "pushModules": {
            "siskin": {
                "type": "apple",
                "registration": {"protocol": "tigase", "provider": PROVIDER},
                "apns": {
                    "keyFilePath": apns.info["p8"],
                    "keyId": apns.info["keyId"],
                    "teamId": apns.info["teamId"],
                    "topic": apns.info["topic"],
                    "endpoint": apns.endpoint,
                    "caFilePath": apns.info["ca"],
                    "requestTimeout": "2s",
                },
                "ratelimit": {"enabled": False},
            },
        },
    }


class App(xmpp_client.Client):
    """A Siskin-style app session: disco, the tigase commands, and enabling push by node."""

    async def features_of(self, jid: str) -> List[str]:
        info = await self.plugin["xep_0030"].get_info(jid=jid, timeout=TIMEOUT)
        return [feature for feature in info["disco_info"]["features"]]

    async def command(self, jid: str, node: str, fields: List[Tuple[str, str]]) -> Dict[str, List[str]]:
        """Runs one command; answers the result form's fields (var → values), or raises with
        the error condition."""
        command = ET.Element(f"{{{NS_COMMANDS}}}command", {"node": node, "action": "execute"})
        form = ET.SubElement(command, f"{{{NS_DATA}}}x", {"type": "submit"})
        for var, value in fields:
            field = ET.SubElement(form, f"{{{NS_DATA}}}field", {"var": var})
            ET.SubElement(field, f"{{{NS_DATA}}}value").text = value
        iq = self.make_iq_set(ito=jid)
        iq.append(command)
        reply = await iq.send(timeout=TIMEOUT)
        done = reply.xml.find(f"{{{NS_COMMANDS}}}command")
        assert done is not None and done.get("status") == "completed", ET.tostring(reply.xml)
        values: Dict[str, List[str]] = {}
        for field in done.iter(f"{{{NS_DATA}}}field"):
            values[field.get("var")] = [v.text or "" for v in field.findall(f"{{{NS_DATA}}}value")]
        return values

    async def enable(self, jid: str, node: str) -> None:
        iq = self.make_iq_set()
        iq.append(ET.Element(f"{{{NS_PUSH}}}enable", {"jid": jid, "node": node}))
        await iq.send(timeout=TIMEOUT)


def run_app(jid: str, port: int, steps):
    """Logs in as `jid`, runs `steps(app)` and logs out; answers what `steps` answered."""

    async def scenario():
        app = await App(jid, PASSWORD).login(port)
        try:
            return await steps(app)
        finally:
            await app.log_out()

    return xmpp_client._run(scenario())


class TigaseStack:
    def __init__(self, server: XmppServer, wiretap: Wiretap, fpush: Fpush, apns: FakeProvider) -> None:
        self.server, self.wiretap, self.fpush, self.apns = server, wiretap, fpush, apns
        self._numbers = itertools.count(1)
        self.sender = self.new_user("sender")

    def new_user(self, prefix: str = "iphone") -> str:
        name = f"{prefix}{next(self._numbers)}"
        self.server.register(name, PASSWORD)
        return f"{name}@{self.server.domain}"

    def token(self) -> str:
        """An APNS-shaped token (64 hex digits, which the fake APNS server delivers), unique."""
        return secrets.token_hex(32)

    def message(self, to: str, node: str, expected_total: int):
        xmpp_client.send_messages(self.sender, PASSWORD, self.server.c2s_port, to, [f"m{expected_total}"])
        pushes = self.wiretap.wait_for_replies(node, expected_total, timeout=TIMEOUT * 2)
        assert len(pushes) == expected_total, self.wiretap.summary()
        return pushes[-1]

    def diagnostics(self) -> str:
        return "\n".join([self.wiretap.summary(), self.fpush.log_tail(), self.server.log_tail(30)])


@pytest.fixture(scope="module")
def apns(tmp_path_factory):
    provider = FakeProvider("apns", binary("fake-apns"), tmp_path_factory.mktemp("fake-apns")).start()
    try:
        yield provider
    finally:
        provider.stop()


@pytest.fixture(scope="module", params=["prosody", "ejabberd"])
def tigase(request, apns, tmp_path_factory):
    workdir = tmp_path_factory.mktemp(f"tigase-{request.param}")
    server = (Prosody if request.param == "prosody" else Ejabberd)(workdir / "server")
    wiretap = fpush = None
    try:
        server.start()
        wiretap = Wiretap(server.component_port).start()
        (workdir / "fpush").mkdir()
        store = str(workdir / "fpush" / "registrations.sqlite3")
        fpush = Fpush(workdir / "fpush", tigase_settings(server, wiretap, apns, store)).start()
        wiretap.wait_for_handshake()
        yield TigaseStack(server, wiretap, fpush, apns)
    finally:
        if fpush is not None:
            fpush.stop()
        if wiretap is not None:
            wiretap.stop()
        server.stop()


def test_register_device_then_an_offline_message_reaches_apns_with_the_account(tigase: TigaseStack):
    user, token = tigase.new_user(), tigase.token()
    push_jid = tigase.server.component_jid

    async def register(app: App):
        features = await app.features_of(push_jid)
        assert PROVIDER in features, features
        form = await app.command(push_jid, "register-device",
                                 [("provider", PROVIDER), ("device-token", token)])
        [node] = form["node"]
        await app.enable(push_jid, node)
        return form, node

    form, node = run_app(user, tigase.server.c2s_port, register)
    assert "tigase:push:encrypt:aes-128-gcm" in form["features"], form
    assert form["max-payload-size"] == ["2048"], form

    push = tigase.message(user, node, 1)
    assert push.reply.kind == "result", f"{push.describe()}\n{tigase.diagnostics()}"
    [request] = tigase.apns.wait_for_requests(token, 1)
    body = request.get("body")
    payload = json.loads(body) if isinstance(body, str) else body
    assert payload["account"] == user, payload


def test_after_unregister_device_the_next_push_is_item_not_found(tigase: TigaseStack):
    user, token = tigase.new_user(), tigase.token()
    push_jid = tigase.server.component_jid
    fields = [("provider", PROVIDER), ("device-token", token)]

    async def register(app: App):
        form = await app.command(push_jid, "register-device", fields)
        await app.enable(push_jid, form["node"][0])
        return form["node"][0]

    node = run_app(user, tigase.server.c2s_port, register)
    assert tigase.message(user, node, 1).reply.kind == "result", tigase.diagnostics()

    async def unregister(app: App):
        return await app.command(push_jid, "unregister-device", fields)

    run_app(user, tigase.server.c2s_port, unregister)
    push = tigase.message(user, node, 2)
    assert push.reply is not None and push.reply.error_type == "cancel", tigase.diagnostics()
    assert push.reply.condition == "item-not-found", push.describe()
    assert len(tigase.apns.requests(token)) == 1
