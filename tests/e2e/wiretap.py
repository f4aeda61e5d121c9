"""A transparent TCP relay between fpush and the XMPP server's component port that reads both
directions as XML streams and records every stanza.

It lets the tests see what the server really sent (each push IQ) and what fpush really answered
(result, or an error and its type), independently of either program's logs. A connection on one
side lives exactly as long as its partner on the other: when the server goes away, fpush's
connection is closed too, and a connection from fpush while the server is down is closed at once.
"""

from __future__ import annotations

import asyncio
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Callable, List, Optional, TypeVar

NS_STREAM = "http://etherx.jabber.org/streams"
NS_PUBSUB = "http://jabber.org/protocol/pubsub"
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
NS_DATA = "jabber:x:data"
NS_COMMANDS = "http://jabber.org/protocol/commands"

T = TypeVar("T")


@dataclass
class Stanza:
    """One top-level element of a stream, in the order it crossed the relay."""

    direction: str  # "to_fpush" (sent by the XMPP server) or "to_server" (sent by fpush)
    connection: int  # which relayed connection, counting from 1
    element: ET.Element
    at: float  # time.monotonic() when the relay read the bytes that completed it

    @property
    def name(self) -> str:
        return self.element.tag.rsplit("}", 1)[-1]


@dataclass
class Reply:
    kind: str  # "result" or "error"
    error_type: Optional[str] = None  # cancel, wait, modify, auth
    condition: Optional[str] = None
    text: Optional[str] = None


@dataclass
class Push:
    """A push IQ the XMPP server sent, and fpush's reply to it once there is one."""

    stanza: Stanza
    token: str
    push_module: Optional[str]
    reply: Optional[Reply] = None
    answered_at: Optional[float] = None  # time.monotonic() when the reply crossed the relay

    @property
    def id(self) -> str:
        return self.stanza.element.get("id", "")

    def describe(self) -> str:
        reply = self.reply
        answer = (
            "no reply yet"
            if reply is None
            else (
                "result"
                if reply.kind == "result"
                else f"error {reply.error_type}/{reply.condition} ({reply.text or ''})"
            )
        )
        return f"push token={self.token} module={self.push_module} id={self.id[:24]}…: {answer}"


def _parse_push(stanza: Stanza) -> Optional[Push]:
    el = stanza.element
    if stanza.name != "iq" or el.get("type") != "set":
        return None
    publish = el.find(f"{{{NS_PUBSUB}}}pubsub/{{{NS_PUBSUB}}}publish")
    if publish is None:
        return None
    module = None
    for fld in el.iterfind(f".//{{{NS_PUBSUB}}}publish-options/{{{NS_DATA}}}x/{{{NS_DATA}}}field"):
        if fld.get("var") == "pushModule":
            module = (fld.findtext(f"{{{NS_DATA}}}value") or "").strip()
    return Push(stanza=stanza, token=publish.get("node", ""), push_module=module)


def _parse_reply(el: ET.Element) -> Reply:
    if el.get("type") == "result":
        return Reply("result")
    error = next((child for child in el if child.tag.rsplit("}", 1)[-1] == "error"), None)
    if error is None:
        return Reply("error")
    condition = None
    text = None
    for child in error:
        if child.tag == f"{{{NS_STANZAS}}}text":
            text = child.text
        elif child.tag.startswith(f"{{{NS_STANZAS}}}"):
            condition = child.tag.rsplit("}", 1)[-1]
    return Reply("error", error.get("type"), condition, text)


class _StreamReader:
    """Cuts one direction of a stream into top-level elements."""

    def __init__(self) -> None:
        self.parser = ET.XMLPullParser(events=("start", "end"))
        self.depth = 0
        self.root: Optional[ET.Element] = None
        self.broken: Optional[str] = None

    def feed(self, data: bytes) -> List[ET.Element]:
        if self.broken:
            return []
        done = []
        try:
            self.parser.feed(data)
            for event, element in self.parser.read_events():
                if event == "start":
                    self.depth += 1
                    if self.depth == 1:
                        self.root = element
                else:
                    self.depth -= 1
                    if self.depth == 1:
                        done.append(element)
                        if self.root is not None:
                            self.root.remove(element)
        except ET.ParseError as err:
            self.broken = str(err)
        return done


class Wiretap:
    """Listens on a free loopback port; each connection is relayed to `upstream_port`."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = 0
        self.stanzas: List[Stanza] = []
        self.pushes: List[Push] = []
        self.connections = 0
        self.parse_errors: List[str] = []
        self._changed = threading.Condition()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="wiretap", daemon=True)
        self._server: Optional[asyncio.AbstractServer] = None
        self._relays: set = set()

    # --- lifecycle (called from the test thread) ---

    def start(self) -> "Wiretap":
        self._thread.start()
        self.port = asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(10)
        return self

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self._close_all(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    # --- what the tests look at ---

    def wait_until(self, what: str, check: Callable[[], Optional[T]], timeout: float = 20) -> T:
        """Waits, without polling, until `check()` (run under the lock) returns something truthy."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                result = check()
                if result:
                    return result
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n{self.summary()}")
                self._changed.wait(left)

    def pushes_for(self, token: str) -> List[Push]:
        with self._changed:
            return [p for p in self.pushes if p.token == token]

    def wait_for_replies(self, token: str, count: int, timeout: float = 20) -> List[Push]:
        """Waits until `count` pushes for `token` have been answered; returns all pushes seen."""

        def answered():
            pushes = [p for p in self.pushes if p.token == token]
            if sum(1 for p in pushes if p.reply is not None) >= count:
                return list(pushes)
            return None

        return self.wait_until(f"{count} answered push(es) for token {token}", answered, timeout)

    def commands(self, node: str) -> List[Stanza]:
        """The ad-hoc command IQs (XEP-0050) for `node` the server relayed to fpush, oldest first."""
        with self._changed:
            return [
                s
                for s in self.stanzas
                if s.direction == "to_fpush"
                and s.name == "iq"
                and any(c.tag == f"{{{NS_COMMANDS}}}command" and c.get("node") == node for c in s.element)
            ]

    def iqs_with_id(self, iq_id: str, direction: str) -> List[Stanza]:
        """The IQs with this id that crossed in `direction` ("to_fpush" or "to_server"), oldest first."""
        with self._changed:
            return [
                s for s in self.stanzas if s.direction == direction and s.name == "iq" and s.element.get("id") == iq_id
            ]

    def handshakes(self) -> int:
        """How many component connections the server has accepted (`<handshake/>` sent back)."""
        with self._changed:
            return sum(1 for s in self.stanzas if s.direction == "to_fpush" and s.name == "handshake")

    def wait_for_handshake(self, after: int = 0, timeout: float = 30) -> int:
        return self.wait_until(
            f"a component handshake number {after + 1}",
            lambda: self.handshakes() if self.handshakes() > after else None,
            timeout,
        )

    def summary(self, last: int = 20) -> str:
        lines = [f"wiretap: {self.connections} connection(s), {self.handshakes()} handshake(s)"]
        lines += [p.describe() for p in self.pushes[-last:]]
        lines += [f"parse error: {e}" for e in self.parse_errors]
        return "\n".join(lines)

    # --- the relay (runs in the wiretap's loop) ---

    async def _listen(self) -> int:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return self._server.sockets[0].getsockname()[1]

    async def _close_all(self) -> None:
        if self._server is not None:
            self._server.close()
        relays = list(self._relays)
        for relay in relays:
            relay.cancel()
        await asyncio.gather(*relays, return_exceptions=True)

    async def _relay(self, from_fpush: asyncio.StreamReader, to_fpush: asyncio.StreamWriter) -> None:
        relay = asyncio.current_task()
        self._relays.add(relay)
        with self._changed:
            self.connections += 1
            number = self.connections
        to_server = None
        pumps = []
        try:
            try:
                from_server, to_server = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            except OSError:
                return  # the server is down: so is this connection
            pumps = [
                asyncio.ensure_future(self._pump(from_fpush, to_server, "to_server", number)),
                asyncio.ensure_future(self._pump(from_server, to_fpush, "to_fpush", number)),
            ]
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pump in pumps:
                pump.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            for writer in (to_fpush, to_server):
                if writer is not None:
                    writer.close()
            self._relays.discard(relay)

    async def _pump(self, reader, writer, direction: str, number: int) -> None:
        stream = _StreamReader()
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    return
                # Taken before forwarding: the far side cannot have seen these bytes earlier.
                read_at = time.monotonic()
                writer.write(data)
                await writer.drain()
                elements = stream.feed(data)
                if elements or stream.broken:
                    self._record(direction, number, elements, stream, read_at)
        except (ConnectionError, OSError):
            return

    def _record(self, direction: str, number: int, elements, stream: _StreamReader, read_at: float) -> None:
        with self._changed:
            for element in elements:
                stanza = Stanza(direction, number, element, read_at)
                self.stanzas.append(stanza)
                if direction == "to_fpush":
                    push = _parse_push(stanza)
                    if push is not None:
                        self.pushes.append(push)
                elif stanza.name == "iq" and element.get("type") in ("result", "error"):
                    # Answer the oldest unanswered push with this id (ids may repeat).
                    for push in self.pushes:
                        if push.reply is None and push.id == element.get("id"):
                            push.reply = _parse_reply(element)
                            push.answered_at = stanza.at
                            break
            if stream.broken and stream.broken not in self.parse_errors:
                self.parse_errors.append(f"{direction} #{number}: {stream.broken}")
            self._changed.notify_all()
