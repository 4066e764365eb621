"""An asyncio MQTT client over paho-mqtt 2.x.

paho is driven by the asyncio loop itself, with no network thread: its socket is watched with
``add_reader``/``add_writer`` and a housekeeping task calls ``loop_misc`` (keepalive). So every
paho callback runs on the loop thread and a message costs no thread hand-off either way, which
keeps our round trip close to raw paho's (DESIGN.md section 8; bench/agent.py). Callbacks only
queue and resolve futures: nothing in them may block the loop.

The blocking part of (re)connecting, TCP connect plus TLS handshake, runs in a worker thread
that touches no paho state; the connected socket is then handed to paho on the loop thread.
Without paho's thread there is no automatic reconnect in paho, so the client reconnects by itself
with exponential backoff (``reconnect_delay``). paho does not resubscribe either, so every
CONNACK makes the client send all of its subscriptions again; the client counts as connected
(``connected``, ``wait_connected``) only once the broker acknowledged them. QoS 1 publishes made
while disconnected wait in paho's queue and go out after the CONNACK.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import threading
import uuid
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MessageState, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from agentmesh.errors import ConnectError, PayloadTooLarge, ProtocolError, PublishTimeout, TransportError
from agentmesh.protocol import MAX_PAYLOAD_BYTES, MAX_TOPIC_LEVELS, Message, encode
from agentmesh.transport.address import BrokerAddress

log = logging.getLogger(__name__)

ProtocolVersion = Literal["auto", "5", "3.1.1"]


@dataclass(frozen=True)
class RawMessage:
    topic: str
    payload: bytes
    retain: bool = False
    qos: int = 0


@dataclass(frozen=True)
class Will:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


PUBLISH_TIMEOUT_S = 30.0  # how long publish() waits for a PUBACK unless told otherwise


def _payload(data: bytes | str | Message) -> bytes:
    if isinstance(data, bytes):
        return data
    if isinstance(data, str):
        return data.encode()
    return encode(data)


def _filter_of(sub: str) -> str:
    """The topic filter a (possibly shared) subscription matches against."""
    if sub.startswith("$share/"):
        return sub.split("/", 2)[2]
    return sub


def topic_matches(topic_filter: str, topic: str) -> bool:
    """MQTT topic matching (paho's ``topic_matches_sub`` builds a trie on every call, which the
    receive path of a busy router cannot afford). Wildcards do not match '$' topics."""
    if "+" not in topic_filter and "#" not in topic_filter:
        return topic_filter == topic
    levels = topic_filter.split("/")
    parts = topic.split("/")
    if topic.startswith("$") and levels[0] in ("+", "#"):
        return False
    for i, level in enumerate(levels):
        if level == "#":
            return True  # also the parent: "a/#" matches "a"
        if i >= len(parts) or (level != "+" and level != parts[i]):
            return False
    return len(parts) == len(levels)


def _check_publish_topic(topic: str) -> None:
    """Refuse topics paho would raise ValueError for, and '$' topics.

    amqtt silently drops every later publish of a client that once wrote to a '$' topic
    (DESIGN.md section 8), so that mistake must fail loudly here.
    """
    if not topic:
        raise ProtocolError("cannot publish to an empty topic", topic=topic)
    if "+" in topic or "#" in topic or "\0" in topic:  # not any(...): this runs for every publish
        raise ProtocolError("cannot publish to a topic with wildcards or NUL", topic=topic[:200])
    if topic.startswith("$"):
        raise ProtocolError("cannot publish to a '$' topic", topic=topic[:200])
    # A broker drops the connection of a client that publishes to a topic it refuses, and paho
    # sends a queued QoS 1 publish again after every reconnect: a loop no reconnect ends.
    if len(topic) > 16383 and len(topic.encode("utf-8", "surrogatepass")) > 65535:
        raise ProtocolError("cannot publish to a topic longer than 65535 bytes", topic=topic[:200])
    if topic.count("/") >= MAX_TOPIC_LEVELS:
        raise ProtocolError(
            f"cannot publish to a topic of more than {MAX_TOPIC_LEVELS} levels", topic=topic[:200]
        )


class Subscription:
    """Messages matching one topic filter, as an async iterator.

    Iteration ends (and ``get`` raises TransportError) once the subscription is closed, by
    ``close()``/``unsubscribe`` or by closing the client, after the messages already received.
    """

    def __init__(self, client: MqttClient, topic_filter: str, qos: int) -> None:
        self.filter = topic_filter
        self.qos = qos
        self._match = _filter_of(topic_filter)
        self._client = client
        # None is the end-of-stream marker; it stays in the queue once closed.
        self._queue: asyncio.Queue[RawMessage | None] = asyncio.Queue()
        self._closed = False
        self._error: str | None = None  # why the broker last refused this subscription

    @property
    def closed(self) -> bool:
        return self._closed

    def matches(self, topic: str) -> bool:
        return topic_matches(self._match, topic)

    def _put(self, message: RawMessage) -> None:
        if not self._closed:
            self._queue.put_nowait(message)

    def _end(self) -> None:
        if not self._closed:
            self._closed = True
            self._queue.put_nowait(None)

    def drain(self) -> list[RawMessage]:
        """Every message already received and not yet read, without waiting."""
        out: list[RawMessage] = []
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if item is None:
                self._queue.put_nowait(None)
                break
            out.append(item)
        return out

    async def _next(self) -> RawMessage | None:
        item = await self._queue.get()
        if item is None:
            self._queue.put_nowait(None)  # every later reader sees the end too
        return item

    async def get(self, timeout: float | None = None) -> RawMessage:
        """The next message; TimeoutError after ``timeout`` s, TransportError once closed."""
        item = await (self._next() if timeout is None else asyncio.wait_for(self._next(), timeout))
        if item is None:
            raise TransportError(f"subscription {self.filter} is closed", broker=str(self._client.broker))
        return item

    def pending(self) -> int:
        """How many received messages wait to be read."""
        return self._queue.qsize() - (1 if self._closed else 0)

    def __aiter__(self) -> AsyncIterator[RawMessage]:
        return self

    async def __anext__(self) -> RawMessage:
        item = await self._next()
        if item is None:
            raise StopAsyncIteration
        return item

    async def close(self) -> None:
        await self._client.unsubscribe(self)


_PUBLISH = 0x30
_PUBACK = 0x40
_DISCONNECT = 0xE0
_COALESCE_MAX = 64 * 1024
_READ_SIZE = 64 * 1024


class _Info(paho.MQTTMessageInfo):
    __slots__ = ()

    def __init__(self, mid: int, condition: threading.Condition) -> None:
        self.mid = mid
        self._published = False
        self._condition = condition
        self.rc = MQTTErrorCode.MQTT_ERR_SUCCESS
        self._iterpos = 0


class _OutMessage(paho.MQTTMessage):
    """A QoS 1 publish as paho keeps it until its PUBACK (paho resends it after a reconnect)."""

    __slots__ = ()

    def __init__(
        self, mid: int, topic: bytes, payload: bytes, retain: bool, condition: threading.Condition
    ) -> None:
        self.timestamp = 0.0
        self.state = MessageState.MQTT_MS_WAIT_FOR_PUBACK
        self.dup = False
        self.mid = mid
        self._topic = topic
        self.payload = payload
        self.qos = 1
        self.retain = retain
        self.info = _Info(mid, condition)
        self.properties = None


def _plain(packet: Any) -> bool:
    """A queued packet that paho does nothing with once written (not QoS 0 PUBLISH, not DISCONNECT)."""
    kind = packet["command"] & 0xF0
    return kind != _DISCONNECT and not (kind == _PUBLISH and packet["qos"] == 0)


class _LoopClient(paho.Client):
    """paho whose (re)connect takes a socket opened beforehand, so it never blocks the loop, and
    whose queued packets go out in one send.

    paho's ``reconnect()`` opens the TCP connection (and TLS handshake) itself, blocking. We run
    paho's own ``_create_socket`` in a worker thread (it only reads connection settings) and let
    ``reconnect()`` pick the result up on the loop thread. ``_create_socket`` is private paho API
    (2.x); without it this class cannot work, so fail loudly rather than block.

    paho writes each queued packet with its own ``send``; with TCP_NODELAY that is one segment, one
    syscall and one broker wake-up per packet. A router answering a message queues a PUBACK, an
    assignment and a few events at once, so ``_packet_write`` first joins the run of queued packets
    that need no bookkeeping after the write (QoS 1 PUBLISH, PUBACK, SUBSCRIBE...) into one.
    Reading, paho asks the socket for one byte (the packet type), then one per length byte, then
    the rest: three syscalls per packet. ``_sock_recv`` reads what the socket holds at once and
    serves paho from that buffer (``buffered`` tells the loop to keep reading when the socket is
    empty but the buffer is not). And paho decodes every PUBACK into new ReasonCode and Properties
    objects; a PUBACK without properties reuses one of each. Past the in-flight limit paho queues
    QoS 1 publishes and, on every PUBACK, walks all unacknowledged ones for a queued one to
    release; ``publish`` and ``_update_inflight`` keep the queued ones in a FIFO instead. A QoS 1
    publish under that limit is built here (``_publish_qos1``), and a PUBACK whole in the read
    buffer is completed here (``_packet_read``), each at about half of paho's cost; a received
    message skips paho's per-topic callback lookup, which left a reference cycle per message.
    These methods, paho's packet dicts and its message bookkeeping are private paho API as well
    (checked below).
    """

    prepared: Any = None  # the socket for the next reconnect(), set on the loop thread

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._puback_reasons: dict[int, ReasonCode] = {}
        self._puback_props = Properties(PacketTypes.PUBACK)  # type: ignore[no-untyped-call]
        self._inbuf = bytearray()
        self._queued: deque[paho.MQTTMessage] = deque()  # QoS 1 publishes over the in-flight limit
        # Nothing waits on a publish's MQTTMessageInfo here (no wait_for_publish: PUBACKs resolve
        # futures on the loop), so one Condition serves them all instead of a new one (and its
        # RLock) per message.
        self._no_waiters = threading.Condition()

    @property
    def buffered(self) -> bool:
        return bool(self._inbuf)

    def _sock_recv(self, bufsize: int) -> bytes:
        buf = self._inbuf
        if not buf:
            data = super()._sock_recv(_READ_SIZE)  # b"" at EOF; BlockingIOError when empty
            if len(data) <= bufsize:
                return data
            buf += data
        chunk = bytes(buf[:bufsize])
        del buf[:bufsize]
        return chunk

    def _sock_close(self) -> None:
        # Bytes of a dead connection must not prefix the next one (paho's reconnect() calls this
        # before opening a socket, even when there is none to close).
        self._inbuf.clear()
        super()._sock_close()

    def open_socket(self) -> Any:
        """Blocking: TCP connect and TLS handshake as paho does them. Worker thread only."""
        return paho.Client._create_socket(self)

    def _create_socket(self) -> Any:
        sock, self.prepared = self.prepared, None
        if sock is None:
            raise OSError("no socket prepared for paho's reconnect")
        return sock

    def _packet_write(self) -> MQTTErrorCode:
        queue = self._out_packet
        if len(queue) > 1 and queue[0]["pos"] == 0 and _plain(queue[0]):
            run = [queue.popleft()]
            size = run[0]["to_process"]
            while queue and _plain(queue[0]) and size + queue[0]["to_process"] <= _COALESCE_MAX:
                run.append(queue.popleft())
                size += run[-1]["to_process"]
            data = b"".join(p["packet"] for p in run) if len(run) > 1 else run[0]["packet"]
            queue.appendleft({**run[0], "packet": data, "to_process": len(data)})
        return super()._packet_write()

    def _packet_read(self) -> MQTTErrorCode:
        # A router gets a PUBACK for each of its 8 publishes per task: one whole at the front of
        # the read buffer is handled here rather than by paho's byte-at-a-time reader.
        buf = self._inbuf
        if self._in_packet["command"] == 0:
            if not buf:
                try:
                    data = super()._sock_recv(_READ_SIZE)
                except BlockingIOError:
                    return MQTTErrorCode.MQTT_ERR_AGAIN
                except OSError:
                    return super()._packet_read()  # paho logs it and reports the lost connection
                if not data:
                    return MQTTErrorCode.MQTT_ERR_CONN_LOST
                buf += data
            if buf[0] == _PUBACK and len(buf) >= 4 and 2 <= buf[1] <= 4 and len(buf) >= 2 + buf[1]:
                end = 2 + buf[1]
                reason = self._puback_reason(buf[2:end])
                if reason is not None:
                    mid = int.from_bytes(buf[2:4], "big")
                    del buf[:end]
                    with self._msgtime_mutex:
                        self._last_bytes_received = paho.time_func()
                    return self._acknowledged(mid, reason)
        return super()._packet_read()

    def _puback_reason(self, packet: bytes | bytearray) -> ReasonCode | None:
        """The reason of a PUBACK that is the packet id, then in MQTT 5 maybe a reason code (0x10
        "no matching subscribers" is common) and an empty property length; None for anything else,
        which takes paho's own path."""
        if not 2 <= len(packet) <= 4 or (len(packet) == 4 and packet[3] != 0):
            return None
        code = packet[2] if len(packet) > 2 else 0
        reason = self._puback_reasons.get(code)
        if reason is None:
            try:
                reason = self._puback_reasons[code] = ReasonCode(PacketTypes.PUBACK, identifier=code)
            except KeyError:
                return None
        return reason

    def _handle_pubackcomp(self, cmd: Literal["PUBACK", "PUBCOMP"]) -> MQTTErrorCode:
        packet = self._in_packet["packet"]
        reason = self._puback_reason(packet) if cmd == "PUBACK" else None
        if reason is None:
            return super()._handle_pubackcomp(cmd)
        return self._acknowledged(int.from_bytes(packet[:2], "big"), reason)

    def _acknowledged(self, mid: int, reason: ReasonCode) -> MQTTErrorCode:
        message = self._out_messages.get(mid)
        if message is None:
            return MQTTErrorCode.MQTT_ERR_SUCCESS
        on_publish: Any = self.on_publish  # a VERSION2 callback (see _connect_once)
        if type(message) is not _OutMessage or on_publish is None:
            with self._out_message_mutex:
                return self._do_on_publish(mid, reason, self._puback_props)
        # paho's _do_on_publish without its locks (every call is on the loop thread) and without
        # notifying a Condition nobody waits on.
        on_publish(self, self._userdata, mid, reason, self._puback_props)
        del self._out_messages[mid]
        message.info._published = True
        self._inflight_messages -= 1
        return self._update_inflight()

    def _handle_on_message(self, message: paho.MQTTMessage) -> None:
        if self._on_message_filtered._root._children:  # per-topic callbacks: never registered here
            super()._handle_on_message(message)
            return
        # paho looks for per-topic callbacks with a recursive closure per message: a reference
        # cycle per received message, left to the garbage collector (in a router with a large heap,
        # a generation-1 collection every ~70 tasks took 0.7 ms).
        on_message: Any = self.on_message
        if on_message is not None:
            with self._in_callback_mutex:
                on_message(self, self._userdata, message)

    def publish(self, *args: Any, **kwargs: Any) -> paho.MQTTMessageInfo:
        if len(args) == 4 and not kwargs:
            topic, payload, qos, retain = args
            if (
                qos == 1
                and type(payload) is bytes
                and self._sock is not None
                and self._max_queued_messages == 0
                and self._inflight_messages < self._max_inflight_messages
            ):
                return self._publish_qos1(topic, payload, retain)
        info = super().publish(*args, **kwargs)
        if self._inflight_messages >= self._max_inflight_messages > 0:
            message = self._out_messages.get(info.mid)
            if message is not None and message.qos == 1 and message.state == MessageState.MQTT_MS_QUEUED:
                self._queued.append(message)
        return info

    def _publish_qos1(self, topic: str, payload: bytes, retain: bool) -> paho.MQTTMessageInfo:
        """paho's ``publish`` for the common case (QoS 1, connected, under the in-flight limit,
        topic already checked by MqttClient) at about half its cost: a router publishes 8 of these
        per task."""
        topic_bytes = topic.encode()
        mid = self._mid_generate()
        out = self._out_messages
        if mid in out:  # 65535 unacknowledged: paho reports it
            return super().publish(topic, payload, 1, bool(retain))
        message = _OutMessage(mid, topic_bytes, payload, bool(retain), self._no_waiters)
        out[mid] = message
        self._inflight_messages += 1
        size = 4 + len(topic_bytes) + len(payload) + (1 if self._protocol == paho.MQTTv5 else 0)
        packet = bytearray((0x32 | (1 if retain else 0),))
        while True:  # the "remaining length" varint
            byte, size = size & 0x7F, size >> 7
            packet.append(byte | 0x80 if size else byte)
            if not size:
                break
        packet += len(topic_bytes).to_bytes(2, "big")
        packet += topic_bytes
        packet += mid.to_bytes(2, "big")
        if self._protocol == paho.MQTTv5:
            packet.append(0)  # no properties
        packet += payload
        self._packet_queue(_PUBLISH, packet, mid, 1, message.info)
        return message.info

    def _update_inflight(self) -> MQTTErrorCode:
        # paho's walk is O(in flight) per PUBACK: a fifth of a loaded router's CPU (BENCHMARKS.md).
        out = self._out_messages
        while self._queued and self._inflight_messages < self._max_inflight_messages:
            message = self._queued.popleft()
            if out.get(message.mid) is not message or message.state != MessageState.MQTT_MS_QUEUED:
                continue  # sent or dropped meanwhile (a reconnect resends everything)
            self._inflight_messages += 1
            message.state = MessageState.MQTT_MS_WAIT_FOR_PUBACK
            rc = self._send_publish(
                message.mid,
                message.topic.encode(),
                message.payload,
                message.qos,
                message.retain,
                message.dup,
                properties=message.properties,
            )
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                return rc
        if len(out) <= self._inflight_messages or self._inflight_messages >= self._max_inflight_messages:
            return MQTTErrorCode.MQTT_ERR_SUCCESS
        return super()._update_inflight()  # queued some other way: paho's own walk


_PAHO_PRIVATE = (
    "_create_socket",
    "_packet_write",
    "_sock_recv",
    "_sock_close",
    "_handle_pubackcomp",
    "_handle_on_message",
    "_packet_read",
    "_packet_queue",
    "_mid_generate",
    "_do_on_publish",
    "_update_inflight",
    "_send_publish",
)
if not all(hasattr(paho.Client, name) for name in _PAHO_PRIVATE):  # pragma: no cover - paho changed
    raise ImportError(f"agentmesh needs paho-mqtt 2.x with Client.{', Client.'.join(_PAHO_PRIVATE)}")


class MqttClient:
    """A small typed asyncio MQTT client.

    ``protocol="auto"`` asks the broker whether it speaks MQTT 5 and uses 3.1.1 otherwise.
    ``session_expiry_s`` > 0 asks for a persistent session (clean_start/clean_session off), so
    QoS 1 messages sent to our subscriptions during a short disconnect are delivered afterwards;
    subscribe before ``connect()`` so those messages have a subscription to land in.
    ``max_payload`` refuses bigger publishes locally (PayloadTooLarge): receivers drop them anyway
    (DESIGN.md section 4), and Mosquitto answers an oversized packet by closing the connection, which
    paho would then resend forever.
    """

    def __init__(
        self,
        broker: BrokerAddress | str | None = None,
        *,
        client_id: str,
        will: Will | None = None,
        session_expiry_s: int = 0,
        keepalive: int = 15,
        protocol: ProtocolVersion = "auto",
        reconnect_delay: tuple[float, float] = (0.2, 5.0),
        max_inflight: int = 1000,
        max_payload: int = MAX_PAYLOAD_BYTES,
    ) -> None:
        self.broker = broker if isinstance(broker, BrokerAddress) else BrokerAddress.resolve(broker)
        self.client_id = client_id
        self.will = will
        self.session_expiry_s = session_expiry_s
        self.keepalive = keepalive
        self.protocol = protocol
        self.reconnect_delay = reconnect_delay
        self.max_inflight = max_inflight
        self.max_payload = max_payload
        self._paho: _LoopClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._subs: list[Subscription] = []
        self._markers: set[str] = set()  # retained() sync topics, delivered to their own sub only
        self._pubacks: dict[int, asyncio.Future[None]] = {}
        # SUBACK futures resolve True when acknowledged, False when the connection dropped first.
        self._subacks: dict[int, asyncio.Future[bool]] = {}
        self._unsubacks: dict[int, asyncio.Future[None]] = {}
        self._reading_paused = False
        self._connected = asyncio.Event()
        self._disconnected = asyncio.Event()
        self._disconnected.set()  # down until the first CONNACK
        self._first_connect: asyncio.Future[ReasonCode] | None = None
        # Connection generations: ``connects`` counts CONNACKs, ``_ready_gen`` the last one whose
        # subscriptions are all restored. A waiter for "ready after generation g" resolves when a
        # later generation is ready.
        self._ready_gen = 0
        self._ready_waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        # The paho client whose socket the loop watches, that socket's fd, and whether the loop
        # also waits for it to become writable (paho has bytes it could not send yet).
        self._io_client: _LoopClient | None = None
        self._fd: int | None = None
        self._writing = False
        self._socket_closed = asyncio.Event()
        self._flush_handle: asyncio.Handle | None = None
        self._housekeeping: asyncio.Task[None] | None = None
        self._reconnecting: asyncio.Task[None] | None = None
        self._backoff: float | None = None  # the last reconnect delay; None after a CONNACK
        self.mqtt5 = False
        self.connects = 0

    # ---- lifecycle -----------------------------------------------------------------------

    async def __aenter__(self) -> MqttClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def connected(self) -> bool:
        """Connected, with every subscription acknowledged by the broker."""
        return self._connected.is_set()

    async def negotiate(self, timeout: float = 5.0) -> bool:
        """Settle the protocol version before connecting (True: MQTT 5).

        With ``protocol="auto"`` this asks the broker on a throwaway connection. Callers use it to
        choose their subscriptions (a shared subscription needs MQTT 5) before ``connect()``.
        """
        if self.protocol == "auto":
            # amqtt answers an MQTT 5 CONNECT with a 3.1.1 CONNACK that paho's v5 parser chokes
            # on, so ask with a throwaway connection first instead of trying and timing out.
            v5 = await asyncio.to_thread(probe_mqtt5, self.broker, timeout)
            self.protocol = "5" if v5 else "3.1.1"
        return self.protocol == "5"

    async def connect(self, timeout: float = 10.0) -> None:
        if self._paho is not None:
            raise TransportError("already connected; close() first", broker=str(self.broker))
        self._loop = asyncio.get_running_loop()
        self._closing = False
        await self.negotiate(min(timeout, 5.0))
        version: Literal["5", "3.1.1"] = "5" if self.protocol == "5" else "3.1.1"
        if version != "5":
            shared = [s.filter for s in self._subs if s.filter.startswith("$share/")]
            if shared:
                raise TransportError(f"shared subscriptions {shared} need MQTT 5", broker=str(self.broker))
        await self._connect_once(version, timeout)

    async def _connect_once(self, version: Literal["5", "3.1.1"], timeout: float) -> None:
        assert self._loop is not None
        v5 = version == "5"
        persistent = self.session_expiry_s > 0
        client = _LoopClient(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=paho.MQTTv5 if v5 else paho.MQTTv311,
            clean_session=None if v5 else not persistent,
            # paho would answer some CONNACK refusals with a blocking reconnect() of its own.
            reconnect_on_failure=False,
        )
        client.max_inflight_messages_set(self.max_inflight)
        client.max_queued_messages_set(0)
        if self.broker.username:
            client.username_pw_set(self.broker.username, self.broker.password)
        if self.broker.tls:
            client.tls_set_context(ssl.create_default_context())
        if self.will:
            client.will_set(self.will.topic, self.will.payload, self.will.qos, self.will.retain)
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_register_write
        client.on_socket_unregister_write = self._on_unregister_write
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        client.on_subscribe = self._on_subscribe
        client.on_unsubscribe = self._on_unsubscribe
        props = None
        if v5:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = self.session_expiry_s
        self._first_connect = self._loop.create_future()
        self._paho = client
        self._backoff = None
        self.mqtt5 = v5
        try:
            # Settings first (the worker thread reads host and port), then the socket.
            client.connect_async(self.broker.host, self.broker.port, self.keepalive)
            client.prepared = await self._open_socket(client)
            # Non-blocking now: takes the prepared socket and queues CONNECT.
            client.connect(
                self.broker.host,
                self.broker.port,
                self.keepalive,
                clean_start=not persistent if v5 else paho.MQTT_CLEAN_START_FIRST_ONLY,
                properties=props,
            )
        except (OSError, ValueError) as exc:
            await self._stop_paho(client)
            raise ConnectError(f"cannot connect: {exc}", broker=str(self.broker)) from None
        self._flush()
        generation = self.connects
        self._housekeeping = self._loop.create_task(self._keep_alive(client))
        loop = self._loop
        deadline = loop.time() + timeout
        try:
            rc = await asyncio.wait_for(asyncio.shield(self._first_connect), timeout)
        except TimeoutError:
            await self._stop_paho(client)
            raise ConnectError(f"no CONNACK within {timeout:g}s", broker=str(self.broker)) from None
        except ConnectError:
            await self._stop_paho(client)
            raise
        if rc.is_failure:
            await self._stop_paho(client)
            name = rc.getName()
            reason = "protocol version refused" if rc.value in (1, 132) else f"refused: {name}"
            raise ConnectError(reason, broker=str(self.broker))
        # Subscriptions registered before connect() are sent with the first CONNACK.
        try:
            await asyncio.wait_for(self._ready_after(generation), max(deadline - loop.time(), 0.1))
        except TimeoutError:
            await self._stop_paho(client)
            raise ConnectError("no SUBACK for the subscriptions in time", broker=str(self.broker)) from None

    async def _open_socket(self, client: _LoopClient) -> Any:
        """A connected socket for ``client``, opened in a worker thread."""
        assert self._loop is not None
        opening = self._loop.run_in_executor(None, client.open_socket)
        try:
            return await asyncio.shield(opening)
        except asyncio.CancelledError:
            opening.add_done_callback(_close_result)  # the thread finishes anyway; do not leak
            raise

    async def _stop_paho(self, client: paho.Client) -> None:
        if self._paho is client:
            self._paho = None
        self._connected.clear()
        for task in (self._housekeeping, self._reconnecting):
            if task is not None:
                task.cancel()
        self._housekeeping = self._reconnecting = None
        await self._hang_up(client)

    async def _hang_up(self, client: paho.Client) -> None:
        """Send DISCONNECT (so the broker keeps our Will to itself) and drop the socket."""
        assert self._loop is not None
        if client.socket() is not None:
            client.disconnect()
            if client is self._io_client:
                self._flush()  # paho closes the socket once DISCONNECT is written
                if client is self._io_client:  # a full send buffer: the writer callback drains it
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._socket_closed.wait(), 1.0)
        sock = client.socket()
        if client is self._io_client:
            self._detach()
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()
        # paho's __del__ closes its socket again; that must not reach this client.
        client.on_socket_open = client.on_socket_close = None
        client.on_socket_register_write = client.on_socket_unregister_write = None

    async def close(self) -> None:
        """Disconnect cleanly: the broker does not publish our Last Will.

        Pending publishes and subscribes fail with TransportError; every subscription ends.
        """
        client = self._paho
        if self._closing:
            return
        self._closing = True
        if client is not None:
            await self._stop_paho(client)
        self._connected.clear()
        self._disconnected.set()
        self._paho = None
        closed = TransportError("client closed", broker=str(self.broker))
        for pending in (self._pubacks, self._subacks, self._unsubacks):
            for fut in pending.values():
                if not fut.done():
                    fut.set_exception(closed)
            pending.clear()
        for _, waiter in self._ready_waiters:
            if not waiter.done():
                waiter.set_exception(closed)
        self._ready_waiters.clear()
        for task in list(self._tasks):
            task.cancel()
        for sub in self._subs:
            sub._end()
        self._subs.clear()
        self._markers.clear()

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Until connected with every subscription restored (returns at once if so)."""
        await asyncio.wait_for(self._connected.wait(), timeout)

    async def wait_disconnected(self, timeout: float | None = None) -> None:
        """Until the connection is lost or closed (returns at once if it is down)."""
        await asyncio.wait_for(self._disconnected.wait(), timeout)

    # ---- publish ----------------------------------------------------------------------------

    async def publish(
        self,
        topic: str,
        payload: bytes | str | Message,
        *,
        qos: int = 1,
        retain: bool = False,
        timeout: float = PUBLISH_TIMEOUT_S,
    ) -> None:
        """Publish; with QoS >= 1 return only after the broker acknowledged it.

        While disconnected the message waits in paho's queue and goes out on reconnect, so a
        publish survives a short broker outage as long as it fits in ``timeout``.
        """
        client = self._require()
        data = self._checked(topic, payload)
        if qos == 0:
            client.publish(topic, data, 0, retain)
            self._flush()
            return
        assert self._loop is not None
        fut: asyncio.Future[None] = self._loop.create_future()
        # No await between publish() and registering the future: the PUBACK callback is
        # scheduled on this loop, so it always runs after the registration.
        info = client.publish(topic, data, qos, retain)
        if info.rc not in (paho.MQTT_ERR_SUCCESS, paho.MQTT_ERR_NO_CONN):
            raise TransportError(f"publish to {topic} failed: {paho.error_string(info.rc)}")
        self._pubacks[info.mid] = fut
        self._flush()  # send now rather than one loop iteration later
        try:
            await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            self._pubacks.pop(info.mid, None)
            raise PublishTimeout(topic=topic, timeout_s=timeout, broker=str(self.broker)) from None

    def publish_nowait(
        self, topic: str, payload: bytes | str | Message, *, qos: int = 1, retain: bool = False
    ) -> None:
        """Queue a publish without waiting for its PUBACK (paho still retries it).

        It is written at the end of this turn of the event loop, in one send with whatever else
        was queued meanwhile (a handler's other publishes, the PUBACK of the message it handled).
        """
        client = self._require()
        client.publish(topic, self._checked(topic, payload), qos, retain)

    def flush(self) -> None:
        """Write what is queued now rather than at the end of this turn of the event loop."""
        self._flush()

    def _checked(self, topic: str, payload: bytes | str | Message) -> bytes:
        _check_publish_topic(topic)
        data = _payload(payload)
        if len(data) > self.max_payload:
            raise PayloadTooLarge(topic=topic, size=len(data), limit=self.max_payload)
        return data

    async def clear_retained(self, topic: str) -> None:
        await self.publish(topic, b"", qos=1, retain=True)

    # ---- subscribe --------------------------------------------------------------------------

    async def subscribe(
        self,
        topic_filter: str,
        *,
        qos: int = 1,
        timeout: float = 10.0,
    ) -> Subscription:
        """Subscribe and return once the broker acknowledged it.

        Before ``connect()`` the subscription is only registered and goes out with the CONNACK
        (so a persistent session's queued messages reach it). During an outage it waits for the
        reconnect, which restores it, within ``timeout``.
        """
        if self._closing:
            raise TransportError("client closed", broker=str(self.broker))
        if topic_filter.startswith("$share/") and self._paho is not None and not self.mqtt5:
            # amqtt grants $share subscriptions and then delivers nothing (DESIGN.md section 8).
            raise TransportError(
                f"shared subscription {topic_filter} needs MQTT 5; this connection speaks 3.1.1",
                broker=str(self.broker),
            )
        sub = Subscription(self, topic_filter, qos)
        self._subs.append(sub)  # before SUBSCRIBE: retained messages may arrive before SUBACK
        if self._paho is None:
            return sub
        try:
            await asyncio.wait_for(self._subscribed(sub), timeout)
        except TimeoutError:
            self._forget(sub)
            raise TransportError(
                f"no SUBACK for {topic_filter} within {timeout:g}s", broker=str(self.broker)
            ) from None
        except BaseException:
            self._forget(sub)
            raise
        return sub

    async def _subscribed(self, sub: Subscription) -> None:
        client = self._require()
        generation = self.connects
        fut = self._send_subscribe(client, sub)
        if fut is not None and await fut:
            return
        # Not connected, or the connection dropped before the SUBACK: the next CONNACK sends every
        # registered subscription, this one included.
        await self._ready_after(generation)
        if sub._error is not None:
            raise TransportError(sub._error, broker=str(self.broker))

    def _send_subscribe(self, client: paho.Client, sub: Subscription) -> asyncio.Future[bool] | None:
        """Send SUBSCRIBE; the SUBACK future, or None when paho has no connection right now."""
        assert self._loop is not None
        rc, mid = client.subscribe(sub.filter, sub.qos)
        if rc == paho.MQTT_ERR_NO_CONN or mid is None:
            return None
        if rc != paho.MQTT_ERR_SUCCESS:
            raise TransportError(f"subscribe to {sub.filter} failed: {paho.error_string(rc)}")
        fut: asyncio.Future[bool] = self._loop.create_future()

        def refused(done: asyncio.Future[bool]) -> None:
            if not done.cancelled() and done.exception() is not None:
                sub._error = str(done.exception())

        fut.add_done_callback(refused)
        sub._error = None
        self._subacks[mid] = fut
        return fut

    async def _ready_after(self, generation: int) -> None:
        """Until a connection newer than ``generation`` has all its subscriptions restored."""
        if self._ready_gen > generation:
            return
        assert self._loop is not None
        waiter: asyncio.Future[None] = self._loop.create_future()
        self._ready_waiters.append((generation, waiter))
        await waiter

    def _forget(self, sub: Subscription) -> None:
        if sub in self._subs:
            self._subs.remove(sub)
        sub._end()

    async def unsubscribe(self, sub: Subscription, *, timeout: float | None = None) -> None:
        """Stop delivery to ``sub`` (its iteration ends after what it already holds): at once, or
        with ``timeout`` once the broker acknowledged the UNSUBSCRIBE (at most ``timeout`` s), so
        that nothing the broker sent before it stopped is dropped here."""
        alone = not any(s.filter == sub.filter for s in self._subs if s is not sub)
        if timeout is not None and alone and self._paho is not None and self.connected:
            assert self._loop is not None
            rc, mid = self._paho.unsubscribe(sub.filter)
            if rc == paho.MQTT_ERR_SUCCESS and mid is not None:
                fut: asyncio.Future[None] = self._loop.create_future()
                self._unsubacks[mid] = fut
                self._flush()
                with contextlib.suppress(TimeoutError, TransportError):
                    await asyncio.wait_for(fut, timeout)
                    # A broker may go on sending what it had queued for us before (MQTT 5
                    # section 3.10.4): it all comes before the marker of a round trip.
                    await self._round_trip(_filter_root(sub.filter), timeout)
                self._unsubacks.pop(mid, None)
                self._forget(sub)
                self._markers.discard(sub.filter)
                return
        self._forget(sub)
        self._markers.discard(sub.filter)
        if self._paho is not None and alone:
            self._paho.unsubscribe(sub.filter)

    def pause_reading(self) -> None:
        """Read nothing more from the broker. What is not read stays unacknowledged, so a
        persistent session delivers it again after the next connect: a clean stop that loses
        nothing pauses, handles what its subscriptions hold (``Subscription.drain``), then closes."""
        self._reading_paused = True
        if self._fd is not None and self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(self._fd)

    def resume_reading(self) -> None:
        """Read from the broker again after ``pause_reading``."""
        self._reading_paused = False
        if self._fd is not None and self._loop is not None and not self._loop.is_closed():
            self._loop.add_reader(self._fd, self._on_readable)
            self._loop.call_soon(self._on_readable)  # bytes may wait in our read buffer

    @contextlib.asynccontextmanager
    async def subscription(self, topic_filter: str, *, qos: int = 1) -> AsyncIterator[Subscription]:
        sub = await self.subscribe(topic_filter, qos=qos)
        try:
            yield sub
        finally:
            await self.unsubscribe(sub)

    async def retained(
        self,
        filters: list[str],
        *,
        timeout: float = 10.0,
    ) -> list[RawMessage]:
        """Every retained message currently held for ``filters``, one per topic.

        MQTT has no end-of-retained marker. The broker delivers the retained messages of a
        subscription before anything published after its SUBACK, so we publish a marker to a
        topic only we listen to and stop reading when it comes back.
        """
        if not filters:
            return []
        subs: list[Subscription] = []
        try:
            for topic_filter in filters:
                subs.append(await self.subscribe(topic_filter, timeout=timeout))
            await self._round_trip(_filter_root(filters[0]), timeout)
            latest: dict[str, RawMessage] = {}
            for sub in subs:
                for msg in sub.drain():
                    if not msg.retain:
                        continue
                    if msg.payload:
                        latest[msg.topic] = msg  # overlapping filters deliver the same message twice
                    else:
                        latest.pop(msg.topic, None)  # cleared while we listened
            return list(latest.values())
        finally:
            for sub in subs:
                await self.unsubscribe(sub)

    async def _round_trip(self, root: str, timeout: float) -> None:
        """Until everything the broker sent us before now has arrived: a marker published to a
        topic only we listen to comes back after it (a broker delivers to a client in order), and
        messages are handed to the loop in arrival order, so all earlier ones are queued now."""
        # The client id in the marker topic lets an ACL grant it: pattern readwrite {ns}/_sync/%c/#
        me = "".join("_" if c in "/+#\0" else c for c in self.client_id) or "_"
        marker_topic = f"{root}/_sync/{me}/{uuid.uuid4().hex}"
        self._markers.add(marker_topic)
        try:
            marker = await self.subscribe(marker_topic, timeout=timeout)
            await self.publish(marker_topic, b"sync", qos=1, timeout=timeout)
            try:
                await marker.get(timeout)
            except TimeoutError:
                raise TransportError(
                    f"no round trip through the broker within {timeout:g}s", broker=str(self.broker)
                ) from None
        finally:
            self._markers.discard(marker_topic)
            for sub in [s for s in self._subs if s.filter == marker_topic]:
                await self.unsubscribe(sub)

    # ---- driving paho from the loop ------------------------------------------------------------
    # paho calls the socket callbacks from inside reconnect(), loop_read(), loop_write() and
    # loop_misc(), all on the loop thread. They must not call loop_write() themselves: paho may
    # hold its (non-reentrant) callback lock, so writes are always deferred to the loop.

    def _on_socket_open(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        _nodelay(client, userdata, sock)
        loop = self._loop
        if loop is None or loop.is_closed() or client is not self._paho:
            return
        self._detach()
        self._io_client, self._fd, self._writing = client, sock.fileno(), False
        self._socket_closed.clear()
        if not self._reading_paused:
            loop.add_reader(self._fd, self._on_readable)

    def _on_socket_close(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        if client is self._io_client:
            self._detach()

    def _detach(self) -> None:
        fd, loop, writing = self._fd, self._loop, self._writing
        self._io_client, self._fd, self._writing = None, None, False
        self._socket_closed.set()
        if fd is None or loop is None or loop.is_closed():
            return
        loop.remove_reader(fd)
        if writing:
            loop.remove_writer(fd)

    def _on_register_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        loop = self._loop
        if client is self._io_client and self._flush_handle is None and loop is not None:
            self._flush_handle = loop.call_soon(self._flush_soon)

    def _on_unregister_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        if client is self._io_client and self._writing and self._fd is not None and self._loop is not None:
            self._loop.remove_writer(self._fd)
            self._writing = False

    def _flush_soon(self) -> None:
        self._flush_handle = None
        self._flush()

    def _flush(self) -> None:
        """Write what paho queued; wait for the socket to become writable if it is full."""
        client = self._io_client
        if client is None or not client.want_write():
            return
        client.loop_write()  # a write error closes the socket and reports the disconnect
        if client is self._io_client and client.want_write() and not self._writing:
            assert self._loop is not None and self._fd is not None
            self._loop.add_writer(self._fd, self._flush)
            self._writing = True

    def _on_readable(self) -> None:
        client = self._io_client
        if client is None:
            return
        rc = client.loop_read()
        # Bytes can wait where the selector cannot see them: in our read buffer, and (TLS) inside
        # the SSL object.
        while rc == paho.MQTT_ERR_SUCCESS and client is self._io_client:
            if not client.buffered:
                sock = client.socket()
                if not isinstance(sock, ssl.SSLSocket) or sock.pending() == 0:
                    break
            rc = client.loop_read()

    async def _keep_alive(self, client: paho.Client) -> None:
        """paho's periodic work (PINGREQ, the keepalive deadline), and a guard for a lost drop."""
        while client is self._paho and not self._closing:
            await asyncio.sleep(1.0)
            if client is not self._paho or self._closing:
                return
            try:
                if client.socket() is not None:
                    client.loop_misc()
                elif self._first_connect is not None and self._first_connect.done():
                    self._reconnect_soon(client)
            except Exception:  # housekeeping must outlive any one bad tick
                log.exception("MQTT housekeeping failed for %s", self.broker)

    def _reconnect_soon(self, client: paho.Client) -> None:
        if self._reconnecting is not None and not self._reconnecting.done():
            return
        assert self._loop is not None
        self._reconnecting = self._loop.create_task(self._reconnect(client))

    async def _reconnect(self, client: paho.Client) -> None:
        """Reconnect with exponential backoff until a socket is up (CONNACK resets the backoff)."""
        assert isinstance(client, _LoopClient)
        low, high = self.reconnect_delay
        while True:
            self._backoff = low if self._backoff is None else min(self._backoff * 2, high)
            await asyncio.sleep(self._backoff)
            if client is not self._paho or self._closing or client.socket() is not None:
                return
            try:
                sock = await self._open_socket(client)
                if client is not self._paho or self._closing:
                    sock.close()
                    return
                client.prepared = sock
                client.reconnect()  # takes the socket, resets in-flight messages, queues CONNECT
            except (OSError, ValueError) as exc:
                log.debug("reconnect to %s failed: %s", self.broker, exc)
                continue
            self._flush()
            if client.socket() is not None:
                return  # CONNACK or a drop arrives through the reader from here on
            # Writing CONNECT already failed; its disconnect found this task still running.

    # ---- paho callbacks (the loop thread) -------------------------------------------------------

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, rc: ReasonCode, props: Any) -> None:
        if self._first_connect is not None and not self._first_connect.done():
            self._first_connect.set_result(rc)
        if rc.is_failure or client is not self._paho or self._closing:
            return
        self._backoff = None
        self.connects += 1
        generation = self.connects
        self._disconnected.clear()
        if generation > 1:
            log.info("reconnected to %s; restoring %d subscriptions", self.broker, len(self._subs))
        pending: list[tuple[Subscription, asyncio.Future[bool]]] = []
        for sub in list(self._subs):
            try:
                fut = self._send_subscribe(client, sub)
            except TransportError as exc:
                sub._error = str(exc)
                log.warning("could not restore subscription %s: %s", sub.filter, exc)
                continue
            if fut is None:
                return  # lost again already; the next CONNACK restores everything
            pending.append((sub, fut))
        if not pending:
            self._mark_ready(generation)
            return
        task = asyncio.ensure_future(self._finish_restore(generation, pending))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _finish_restore(
        self, generation: int, pending: list[tuple[Subscription, asyncio.Future[bool]]]
    ) -> None:
        results = await asyncio.gather(*(fut for _, fut in pending), return_exceptions=True)
        for (sub, _), result in zip(pending, results, strict=True):
            if result is False:
                return  # the connection dropped before every SUBACK came; the next one retries
            if isinstance(result, BaseException):
                log.warning("broker refused subscription %s: %s", sub.filter, result)
        self._mark_ready(generation)

    def _mark_ready(self, generation: int) -> None:
        if generation != self.connects or self._closing:
            return  # a newer connection (or close) superseded this one
        self._ready_gen = generation
        self._connected.set()
        waiting, self._ready_waiters = self._ready_waiters, []
        for after, waiter in waiting:
            if after < generation:
                if not waiter.done():
                    waiter.set_result(None)
            else:
                self._ready_waiters.append((after, waiter))

    def _on_disconnect(
        self, client: paho.Client, userdata: Any, flags: Any, rc: ReasonCode, props: Any
    ) -> None:
        if client is not self._paho:
            return  # a connection we gave up on
        if self._first_connect is not None and not self._first_connect.done():
            self._first_connect.set_exception(
                ConnectError(f"connection closed before CONNACK ({rc})", broker=str(self.broker))
            )
            return
        if self._closing:
            return
        log.warning("lost connection to %s (%s); reconnecting", self.broker, rc)
        self._connected.clear()
        self._disconnected.set()
        # SUBACKs of the lost connection never come; PUBACKs do (paho resends QoS 1 publishes).
        for fut in self._subacks.values():
            if not fut.done():
                fut.set_result(False)
        self._subacks.clear()
        for unsuback in self._unsubacks.values():  # nor UNSUBACKs
            if not unsuback.done():
                unsuback.set_exception(TransportError("connection lost", broker=str(self.broker)))
        self._unsubacks.clear()
        self._reconnect_soon(client)

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        # An exception here would abort paho's read loop, so nothing may escape.
        try:
            message = RawMessage(msg.topic, bytes(msg.payload), bool(msg.retain), msg.qos)
        except Exception as exc:  # e.g. a topic that is not UTF-8
            log.warning("dropped an undecodable message from %s: %s", self.broker, exc)
            return
        self._dispatch(message)

    def _dispatch(self, message: RawMessage) -> None:
        marker = message.topic in self._markers
        for sub in self._subs:
            if sub.matches(message.topic) and (not marker or sub.filter == message.topic):
                sub._put(message)

    def _on_publish(self, client: paho.Client, userdata: Any, mid: int, rc: ReasonCode, props: Any) -> None:
        self._acked(self._pubacks, mid, None if not rc.is_failure else rc.getName())

    def _on_subscribe(
        self, client: paho.Client, userdata: Any, mid: int, rcs: list[ReasonCode], props: Any
    ) -> None:
        failed = [r.getName() for r in rcs if r.is_failure]
        self._subacked(mid, f"subscription refused: {failed}" if failed else None)

    def _acked(self, pending: dict[int, asyncio.Future[None]], mid: int, error: str | None) -> None:
        fut = pending.pop(mid, None)
        if fut is None or fut.done():
            return
        if error is None:
            fut.set_result(None)
        else:
            fut.set_exception(TransportError(error, broker=str(self.broker)))

    def _subacked(self, mid: int, error: str | None) -> None:
        fut = self._subacks.pop(mid, None)
        if fut is None or fut.done():
            return
        if error is None:
            fut.set_result(True)
        else:
            fut.set_exception(TransportError(error, broker=str(self.broker)))

    def _on_unsubscribe(self, client: paho.Client, userdata: Any, mid: int, *args: Any) -> None:
        self._acked(self._unsubacks, mid, None)

    def _require(self) -> paho.Client:
        if self._paho is None:
            raise TransportError("not connected; call connect() first", broker=str(self.broker))
        return self._paho


def _filter_root(topic_filter: str) -> str:
    root = []
    for level in _filter_of(topic_filter).split("/"):
        if level in ("+", "#"):
            break
        root.append(level)
    prefix = "/".join(root[:2])
    # Never a '$' topic: amqtt stops accepting a client's publishes after one (DESIGN.md section 8).
    return prefix if prefix and not prefix.startswith("$") else "agentmesh"


def probe_mqtt5(broker: BrokerAddress, timeout: float) -> bool:
    """Whether the broker accepts MQTT 5, asked with a minimal CONNECT on a throwaway socket."""
    client_id = f"agentmesh-probe-{uuid.uuid4().hex[:12]}".encode()
    variable = b"\x00\x04MQTT\x05\x02\x00\x0a\x00"  # name, level 5, clean start, keepalive 10, no props
    body = variable + len(client_id).to_bytes(2, "big") + client_id
    packet = b"\x10" + bytes([len(body)]) + body
    try:
        with socket.create_connection((broker.host, broker.port), timeout=timeout) as raw:
            sock: socket.socket = (
                ssl.create_default_context().wrap_socket(raw, server_hostname=broker.host)
                if broker.tls
                else raw
            )
            sock.sendall(packet)
            head = _read_connack_head(sock)
            with contextlib.suppress(OSError):
                sock.sendall(b"\xe0\x00")  # DISCONNECT
    except OSError as exc:
        raise ConnectError(f"cannot connect: {exc}", broker=str(broker)) from None
    if head is None:
        return False
    remaining, return_code = head
    # A v5 CONNACK has a properties length after the reason code (remaining length >= 3);
    # a 3.1.1 broker sends remaining length 2 with return code 1 (unacceptable protocol level).
    return remaining >= 3 and return_code not in (0x01, 0x84)


def _read_connack_head(sock: socket.socket) -> tuple[int, int] | None:
    """(remaining length, reason code) of the CONNACK on ``sock``, or None if it is not one."""
    data = b""

    def need(n: int) -> bool:
        nonlocal data
        while len(data) < n:
            chunk = sock.recv(64)
            if not chunk:
                return False
            data += chunk
        return True

    if not need(2) or data[0] != 0x20:
        return None
    remaining, shift, pos = 0, 0, 1
    while True:  # variable-length "remaining length", at most 4 bytes
        if pos > 4 or not need(pos + 1):
            return None
        byte = data[pos]
        remaining |= (byte & 0x7F) << shift
        shift += 7
        pos += 1
        if not byte & 0x80:
            break
    if not need(pos + 2):
        return None
    return remaining, data[pos + 1]


def _close_result(opening: asyncio.Future[Any]) -> None:
    if not opening.cancelled() and opening.exception() is None:
        with contextlib.suppress(OSError):
            opening.result().close()


def _nodelay(client: paho.Client, userdata: Any, sock: Any) -> None:
    # Nagle's algorithm adds ~40 ms to every QoS 1 round trip on loopback (DESIGN.md section 8).
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
