"""A real XMPP client (slixmpp) doing what a phone app does: log in, enable XEP-0357 push with a
publish-options form, go offline or lose its connection, and, as a second user, send messages.
Conversations-family apps also run an XEP-0050 command at the app server first
(`register-push-fcm`), through their own server, and enable push with what it answered.

Each action runs in its own asyncio loop, so tests call plain functions. Also a small command
line for scripts/demo.sh:
    python3 tests/e2e/xmpp_client.py enable-push JID PASSWORD PORT PUSH_JID TOKEN PUSH_MODULE
    python3 tests/e2e/xmpp_client.py send JID PASSWORD PORT TO BODY...
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import slixmpp

NS_PUSH = "urn:xmpp:push:0"
NS_DATA = "jabber:x:data"
NS_COMMANDS = "http://jabber.org/protocol/commands"
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
PUBLISH_OPTIONS = "http://jabber.org/protocol/pubsub#publish-options"
CONNECT_TIMEOUT = 20.0


class ClientError(AssertionError):
    """The client could not do what the test asked (login failed, enable refused, …)."""


@dataclass
class CommandReply:
    """The answer to an XEP-0050 command: a completed command with its form's fields, or an
    IQ error with its type and condition."""

    kind: str  # "result" or "error"
    status: Optional[str] = None  # the command's status, e.g. "completed"
    fields: Dict[str, str] = field(default_factory=dict)
    error_type: Optional[str] = None
    condition: Optional[str] = None
    text: Optional[str] = None

    @property
    def completed(self) -> bool:
        return self.kind == "result" and self.status == "completed"

    @staticmethod
    def of_result(iq: ET.Element) -> "CommandReply":
        command = iq.find(f"{{{NS_COMMANDS}}}command")
        if command is None:
            return CommandReply("result")
        fields = {}
        for fld in command.iterfind(f"{{{NS_DATA}}}x/{{{NS_DATA}}}field"):
            fields[fld.get("var", "")] = fld.findtext(f"{{{NS_DATA}}}value") or ""
        return CommandReply("result", status=command.get("status"), fields=fields)

    @staticmethod
    def of_error(iq: ET.Element) -> "CommandReply":
        error = iq.find("{jabber:client}error")
        if error is None:
            return CommandReply("error")
        conditions = [c.tag.rsplit("}", 1)[-1] for c in error if c.tag.startswith(f"{{{NS_STANZAS}}}")]
        condition = next((c for c in conditions if c != "text"), None)
        text = error.findtext(f"{{{NS_STANZAS}}}text")
        return CommandReply("error", error_type=error.get("type"), condition=condition, text=text)


class Client(slixmpp.ClientXMPP):
    """A logged-in session; plaintext on loopback (the test servers run without TLS)."""

    def __init__(self, jid: str, password: str, stream_management: bool = False) -> None:
        # SCRAM is safe without TLS, and the test servers have no TLS on loopback.
        super().__init__(jid, password, plugin_config={"feature_mechanisms": {"unencrypted_scram": True}})
        self.enable_direct_tls = False
        self.enable_starttls = False
        self.enable_plaintext = True
        self.register_plugin("xep_0030")
        self.stream_management = stream_management
        if stream_management:
            self.register_plugin("xep_0198")
        loop = asyncio.get_running_loop()
        self._ready: asyncio.Future = loop.create_future()
        self._sm_enabled: asyncio.Future = loop.create_future()
        self.add_event_handler("session_start", self._on_session_start)
        self.add_event_handler("sm_enabled", self._on_sm_enabled)
        self.add_event_handler("failed_auth", self._on_failure)
        self.add_event_handler("connection_failed", self._on_failure)
        self.add_event_handler("disconnected", self._on_failure)

    def _on_session_start(self, _event) -> None:
        # No presence on purpose: the session only exists to enable push, and it must not look
        # like an available resource that messages would be delivered to.
        if not self._ready.done():
            self._ready.set_result(True)

    def _on_sm_enabled(self, _event) -> None:
        if not self._sm_enabled.done():
            self._sm_enabled.set_result(True)

    def _on_failure(self, event) -> None:
        for future in (self._ready, self._sm_enabled):
            if not future.done():
                future.set_exception(ClientError(f"{self.boundjid.bare}: could not log in ({event})"))

    async def login(self, port: int) -> "Client":
        self.connect("127.0.0.1", port)
        try:
            await asyncio.wait_for(self._ready, CONNECT_TIMEOUT)
            if self.stream_management:
                await asyncio.wait_for(self._sm_enabled, CONNECT_TIMEOUT)
        except asyncio.TimeoutError as err:
            raise ClientError(f"{self.boundjid.bare}: no session within {CONNECT_TIMEOUT}s") from err
        return self

    async def enable_push(self, push_jid: str, token: str, push_module: Optional[str], secret: str) -> None:
        """XEP-0357 enable, with a publish-options form: `pushModule` (Monal-style clients) and
        `secret`, or only `secret` (Conversations-style clients, `push_module=None`)."""
        enable = ET.Element(f"{{{NS_PUSH}}}enable", {"jid": push_jid, "node": token})
        form = ET.SubElement(enable, f"{{{NS_DATA}}}x", {"type": "submit"})
        options = [("FORM_TYPE", PUBLISH_OPTIONS), ("pushModule", push_module), ("secret", secret)]
        for var, value in [(var, value) for var, value in options if value is not None]:
            field = ET.SubElement(form, f"{{{NS_DATA}}}field", {"var": var})
            ET.SubElement(field, f"{{{NS_DATA}}}value").text = value
        iq = self.make_iq_set()
        iq.append(enable)
        try:
            await iq.send(timeout=CONNECT_TIMEOUT)
        except slixmpp.exceptions.IqError as err:
            raise ClientError(f"push enable refused: {err.iq}") from err

    async def execute_command(
        self, to: str, node: str, fields: Sequence[Tuple[str, str]], action: str = "execute"
    ) -> CommandReply:
        """One IQ set with `action='execute'` and a submitted form, as Conversations sends its
        `register-push-*` commands: the whole command in a single step (or another `action`)."""
        command = ET.Element(f"{{{NS_COMMANDS}}}command", {"node": node, "action": action})
        form = ET.SubElement(command, f"{{{NS_DATA}}}x", {"type": "submit"})
        for var, value in fields:
            fld = ET.SubElement(form, f"{{{NS_DATA}}}field", {"var": var})
            ET.SubElement(fld, f"{{{NS_DATA}}}value").text = value
        iq = self.make_iq_set(ito=to)
        iq.append(command)
        try:
            result = await iq.send(timeout=CONNECT_TIMEOUT)
        except slixmpp.exceptions.IqError as err:
            return CommandReply.of_error(err.iq.xml)
        except slixmpp.exceptions.IqTimeout as err:
            raise ClientError(f"no answer to command {node} at {to} within {CONNECT_TIMEOUT}s") from err
        return CommandReply.of_result(result.xml)

    def send_messages(self, to: str, bodies: Iterable[str]) -> None:
        for body in bodies:
            self.send_message(mto=to, mbody=body, mtype="chat")

    async def log_out(self) -> None:
        """Closes the stream properly: the server ends the session, the user is offline.
        The server has handled everything sent before once it closes its side."""
        self.del_event_handler("disconnected", self._on_failure)
        await self.disconnect(wait=5.0)

    async def drop_connection(self) -> None:
        """Loses the TCP connection without closing the stream, as a phone going out of
        coverage does: the stream-management session stays resumable (hibernates) on the server.

        Everything received is acknowledged first; otherwise the servers push at once for the
        unacknowledged stanzas (the enable result), before any message arrives."""
        self.del_event_handler("disconnected", self._on_failure)
        self.plugin["xep_0198"].send_ack()
        await self.waiting_queue.join()  # the ack is written to the socket
        lost = self.wait_until("disconnected", CONNECT_TIMEOUT)
        self.transport.close()  # FIN after the ack, but no </stream:stream>
        await lost


def _run(coro):
    """Runs one client scenario in a fresh loop and leaves nothing of it behind."""
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        # slixmpp keeps background tasks per client: end them while the loop still runs, and
        # collect the clients now (their finalizers talk to the loop).
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        del coro
        gc.collect()
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


def enable_push(
    jid: str,
    password: str,
    port: int,
    push_jid: str,
    token: str,
    push_module: Optional[str],
    secret: str = "app-secret-xyz",
    then: str = "log_out",
) -> None:
    """Logs in, enables push for `token`, then logs out (`then="log_out"`: the user is offline)
    or drops the connection of a stream-management session (`then="drop"`)."""
    if then not in ("log_out", "drop"):
        raise ValueError(f"unknown way to leave: {then}")

    async def scenario() -> None:
        client = await Client(jid, password, stream_management=(then == "drop")).login(port)
        await client.enable_push(push_jid, token, push_module, secret)
        if then == "drop":
            await client.drop_connection()
        else:
            await client.log_out()

    _run(scenario())


def execute_commands(
    jid: str, password: str, port: int, to: str, commands: Sequence[Tuple[str, Sequence[Tuple[str, str]]]],
    action: str = "execute",
) -> List[CommandReply]:
    """Logs in, runs each (node, form fields) command at `to` in order with `action`, logs out."""

    async def scenario() -> List[CommandReply]:
        client = await Client(jid, password).login(port)
        replies = [await client.execute_command(to, node, fields, action) for node, fields in commands]
        await client.log_out()
        return replies

    return _run(scenario())


def register_and_enable(
    jid: str,
    password: str,
    port: int,
    app_server: str,
    command: str,
    fields: Sequence[Tuple[str, str]],
    secret: Optional[str] = None,
) -> CommandReply:
    """What a Conversations-family app does: run `command` (e.g. `register-push-fcm`) at the app
    server, enable push at its own server with the `jid`, `node` and `secret` answered (or with
    `secret` instead, to test a wrong one), and go offline. Push is enabled only when the command
    completed; the reply is returned either way."""

    async def scenario() -> CommandReply:
        client = await Client(jid, password).login(port)
        reply = await client.execute_command(app_server, command, fields)
        if reply.completed:
            given = reply.fields
            await client.enable_push(given.get("jid", ""), given.get("node", ""), None,
                                     secret if secret is not None else given.get("secret", ""))
        await client.log_out()
        return reply

    return _run(scenario())


def send_messages(jid: str, password: str, port: int, to: str, bodies: Iterable[str]) -> None:
    """Logs in as the sender, sends chat messages to `to` in order, and logs out cleanly."""
    bodies = list(bodies)

    async def scenario() -> None:
        client = await Client(jid, password).login(port)
        client.send_messages(to, bodies)
        await client.log_out()

    _run(scenario())


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="log the XMPP traffic")
    sub = parser.add_subparsers(dest="command", required=True)
    enable = sub.add_parser("enable-push", help="log in, enable push, log out")
    for name in ("jid", "password", "port", "push_jid", "token", "push_module"):
        enable.add_argument(name)
    send = sub.add_parser("send", help="log in and send chat messages")
    for name in ("jid", "password", "port", "to"):
        send.add_argument(name)
    send.add_argument("bodies", nargs="+")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.CRITICAL)
    try:
        if args.command == "enable-push":
            enable_push(args.jid, args.password, int(args.port), args.push_jid, args.token, args.push_module)
            print(f"{args.jid}: push enabled at {args.push_jid} (token {args.token}), now offline")
        else:
            send_messages(args.jid, args.password, int(args.port), args.to, args.bodies)
            print(f"{args.jid}: sent {len(args.bodies)} message(s) to {args.to}")
    except ClientError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
