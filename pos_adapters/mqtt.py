"""MQTT transport: registers publish JSON requests; the gateway answers each with a JSON reply.

    {prefix}/{store}/pos/{wsid}/req      requests, QoS 1, from the registers
    {prefix}/{store}/pos/{wsid}/resp     replies, QoS 1 (or the request's MQTT 5 response topic)
    {prefix}/{store}/gateway/status      retained; the broker's last will sets it offline

Bodies use the command classes' field names (`messages.COMMANDS`, `messages.REPLIES`) and every
value goes through the same `Command.parse` validation, so a register gets the same answer over
MQTT as over TCP or serial. A request redelivered with the same wsid and correlation
id is answered from a cache and never runs twice. `MqttResponder` holds that logic without a
broker; `MqttAdapter` connects, reconnects with backoff, and publishes the gateway's status.
docs/protocol.md ("MQTT") is the contract.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import json
import random
import re
import socket
import ssl
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

import aiomqtt
import structlog
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway.domain.reasons import Reason
from gateway.links import Link, LinkEvents
from gateway.service import Gateway
from pos_adapters.sim.messages import (
    COMMANDS,
    REPLIES,
    AnyCommand,
    BadRequest,
    ParseContext,
    command_named,
    error_fields,
)

log = structlog.get_logger("pos_adapters.mqtt")

MAX_PAYLOAD = 65536  # bytes of one request body
MAX_CACHED = 10_000  # replies kept for redeliveries, oldest forgotten first
REPLAY_WINDOW_S = 600.0  # a redelivery later than this runs as a new request
SESSION_EXPIRY_S = 60  # the broker keeps our subscription and queued requests this long
RECONNECT_FIRST_S = 0.5
RECONNECT_MAX_S = 30.0

_WSID = re.compile(r"[0-9]{1,4}")
_INTEGER = re.compile(r"-?[0-9]{1,18}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_RESERVED_KEYS = frozenset({"command", "correlation_id"})

CorrelationId = str | int


# ---- topics and JSON bodies ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Topics:
    """The topic names of one store."""

    prefix: str
    store_id: str

    def __post_init__(self) -> None:
        for name, value in (("prefix", self.prefix), ("store_id", self.store_id)):
            if not value or "+" in value or "#" in value or "\x00" in value:
                raise ValueError(f"mqtt {name} {value!r} must be non-empty, without + # or NUL")

    @property
    def base(self) -> str:
        return f"{self.prefix}/{self.store_id}"

    @property
    def requests(self) -> str:
        """The subscription: every workstation's request topic."""
        return f"{self.base}/pos/+/req"

    @property
    def status(self) -> str:
        return f"{self.base}/gateway/status"

    def request(self, wsid: int | str) -> str:
        return f"{self.base}/pos/{wsid}/req"

    def reply(self, wsid: int | str) -> str:
        return f"{self.base}/pos/{wsid}/resp"

    def workstation_of(self, topic: str) -> str | None:
        """The `{wsid}` level of a request topic, as sent; None for any other topic."""
        head = f"{self.base}/pos/"
        if not (topic.startswith(head) and topic.endswith("/req")):
            return None
        level = topic[len(head) : -len("/req")]
        return None if not level or "/" in level else level


def reply_body(fields: Sequence[str], correlation_id: CorrelationId | None) -> dict[str, Any]:
    """A reply's SIM fields as the JSON object MQTT sends: every field named (`REPLIES`), counts
    as integers, optional fields left empty as null, amounts as strings (money is never a binary
    float)."""
    kind = fields[0]
    body: dict[str, Any] = {"reply": kind}
    for position, spec in enumerate(REPLIES[kind], start=1):
        if spec.rest:
            body[spec.name] = list(fields[position:])
            continue
        value = fields[position] if position < len(fields) else ""
        if not value and spec.optional:
            body[spec.name] = None
        elif spec.count and _INTEGER.fullmatch(value):
            body[spec.name] = int(value)
        else:
            body[spec.name] = value
    body["correlation_id"] = correlation_id
    return body


def fields_of_reply(body: Mapping[str, Any]) -> list[str]:
    """The inverse of `reply_body` (for registers and tests): a JSON reply as SIM fields."""
    kind = str(body["reply"])
    fields = [kind]
    for spec in REPLIES[kind]:
        value = body.get(spec.name)
        if isinstance(value, list):
            fields.extend(str(v) for v in value)
        else:
            fields.append("" if value is None else str(value))
    return fields


def request_body(fields: Sequence[str], correlation_id: CorrelationId) -> dict[str, Any]:
    """SIM request fields (command first) as the JSON object a register publishes."""
    command = fields[0]
    known = COMMANDS.get(command)
    names = known.names if known is not None else ()
    body: dict[str, Any] = {"command": command}
    for position, value in enumerate(fields[1:]):
        body[names[position] if position < len(names) else f"field_{position + 2}"] = value
    body["correlation_id"] = correlation_id
    return body


def _encode(body: Mapping[str, Any]) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _decode(payload: bytes, max_payload: int) -> dict[str, Any]:
    if len(payload) > max_payload:
        raise BadRequest(Reason.FRAME_TOO_LARGE, f"payload over {max_payload} bytes")
    try:
        body = json.loads(payload.decode("utf-8"), parse_constant=_refuse_constant)
    except UnicodeDecodeError:
        raise BadRequest(Reason.BAD_FRAME, "payload is not UTF-8") from None
    except (ValueError, RecursionError):
        raise BadRequest(Reason.BAD_FRAME, "payload is not JSON") from None
    if not isinstance(body, dict):
        raise BadRequest(Reason.BAD_FRAME, "payload is not a JSON object")
    return body


def _text_of(name: str, value: Any) -> str:
    """A JSON value as the text it would be in a SIM field: strings as they are, integers as their
    decimal digits; anything else is refused (floats above all: 12.5 may not be 12.50)."""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return str(value)
        except ValueError:  # more digits than Python converts
            pass
    raise BadRequest(Reason.BAD_FIELD, f"{name}: a string or an integer expected"[:80])


def _correlation_id(body: Mapping[str, Any]) -> CorrelationId:
    if "correlation_id" not in body:
        raise BadRequest(Reason.BAD_FIELD, "correlation_id: missing")
    value = body["correlation_id"]
    text = _text_of("correlation_id", value)
    if not 1 <= len(text) <= 128 or _CONTROL.search(text):
        raise BadRequest(Reason.BAD_FIELD, "correlation_id: 1 to 128 characters expected")
    assert isinstance(value, str | int)
    return value


def request_values(command: AnyCommand, body: Mapping[str, Any], wsid: int) -> list[str]:
    """A request body's values as the SIM fields after the command, in wire order (`names`);
    `wsid` (from the topic) fills a missing wsid."""
    names = command.names
    for key in body:
        if key not in names and key not in _RESERVED_KEYS:
            message = f"unknown field {key[:40]!r} for {command.name}"
            raise BadRequest(Reason.BAD_FIELD, message)
    values: list[str] = []
    for name in names:
        if name in body:
            values.append(_text_of(name, body[name]))
        elif name == "wsid":
            values.append(str(wsid))
        else:
            raise BadRequest(Reason.BAD_FIELD, f"{name}: missing")
    return values


def _usable_topic(topic: object) -> str | None:
    if isinstance(topic, str) and topic and not any(c in topic for c in "+#\x00"):
        return topic
    return None


def _utc_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


# ---- answering (no broker) ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One reply to publish."""

    topic: str
    payload: bytes
    correlation_data: bytes | None


@dataclass
class _Cached:
    fingerprint: bytes  # of the request body, keys sorted
    payload: bytes
    at: float


@dataclass
class MqttStats:
    requests: int = 0
    replayed: int = 0
    errors: Counter[str] = field(default_factory=Counter)  # reason -> count of ERROR replies
    internal_errors: int = 0
    correlation_reused: int = 0  # a used correlation id with another body: run as new
    ignored: int = 0  # retained requests, and messages on topics that are not ours
    publish_failures: int = 0


class MqttResponder:
    """Turns one request message into one reply: validation, replay cache, per-wsid order."""

    def __init__(
        self,
        service: Gateway,
        topics: Topics,
        *,
        max_payload: int = MAX_PAYLOAD,
        replay_window_s: float = REPLAY_WINDOW_S,
    ) -> None:
        self.service = service
        self.topics = topics
        self.max_payload = max_payload
        self.replay_window_s = replay_window_s
        self.context = ParseContext(
            decimals=service.options.currency_decimals,
            latest_business_date=service.latest_business_date,
            future_business_date=service.note_future_business_date,
        )
        self.stats = MqttStats()
        self._locks: dict[int, asyncio.Lock] = {}  # wsid -> lock; wsid <= 9999 bounds it
        self._cache: OrderedDict[tuple[int, str], _Cached] = OrderedDict()

    async def handle(
        self,
        topic: str,
        payload: bytes,
        *,
        response_topic: str | None = None,
        correlation_data: bytes | None = None,
    ) -> Outgoing | None:
        """The reply to one message, or None for a topic that is not a request topic."""
        level = self.topics.workstation_of(topic)
        if level is None:
            self.stats.ignored += 1
            return None
        self.stats.requests += 1
        reply_topic = _usable_topic(response_topic) or self.topics.reply(level)

        def error(bad: BadRequest, correlation_id: CorrelationId | None) -> Outgoing:
            self.stats.errors[bad.reason.value] += 1
            fields = error_fields(bad.reason, bad.message)
            return Outgoing(
                reply_topic, _encode(reply_body(fields, correlation_id)), correlation_data
            )

        try:
            body = _decode(payload, self.max_payload)
            correlation_id = _correlation_id(body)
        except BadRequest as bad:
            return error(bad, None)
        if not _WSID.fullmatch(level) or not 1 <= int(level) <= 9999:
            return error(
                BadRequest(Reason.BAD_FIELD, "wsid: topic level must be 1..9999"), correlation_id
            )
        wsid = int(level)
        key = (wsid, json.dumps(correlation_id))
        # A digest, not the body: 10,000 cached POSTs of 60 KB each would be 600 MB.
        canonical = json.dumps(body, sort_keys=True, ensure_ascii=False).encode()
        fingerprint = hashlib.blake2b(canonical, digest_size=16).digest()
        lock = self._locks.setdefault(wsid, asyncio.Lock())
        # Requests of one workstation run one at a time, in arrival order; so a redelivery that
        # arrives while its first copy still runs waits for it and is then answered from the cache.
        async with lock:
            loop = asyncio.get_running_loop()
            cached = self._cache.get(key)
            if cached is not None and loop.time() - cached.at <= self.replay_window_s:
                if cached.fingerprint == fingerprint:
                    self.stats.replayed += 1
                    self._cache.move_to_end(key)
                    return Outgoing(reply_topic, cached.payload, correlation_data)
                self.stats.correlation_reused += 1
                log.warning("mqtt_correlation_id_reused", wsid=wsid)
            fields = await self._answer(body, wsid)
            payload_out = _encode(reply_body(fields, correlation_id))
            self._cache[key] = _Cached(fingerprint, payload_out, loop.time())
            self._cache.move_to_end(key)
            while len(self._cache) > MAX_CACHED:
                self._cache.popitem(last=False)
            return Outgoing(reply_topic, payload_out, correlation_data)

    async def _answer(self, body: Mapping[str, Any], wsid: int) -> list[str]:
        try:
            name = body.get("command")
            if name is None:
                raise BadRequest(Reason.BAD_FIELD, "command: missing")
            if not isinstance(name, str):
                raise BadRequest(Reason.BAD_FIELD, "command: a string expected")
            command = command_named(name)
            request = command.parse(request_values(command, body, wsid), self.context)
            if request is not None and request.wsid != wsid:
                message = f"wsid: {request.wsid} is not the topic's {wsid}"
                raise BadRequest(Reason.BAD_FIELD, message)
        except BadRequest as bad:
            self.stats.errors[bad.reason.value] += 1
            return error_fields(bad.reason, bad.message)
        try:
            answer = await command.run(self.service, request)
        except Exception:  # a bug costs one reply, never the adapter or the daemon
            self.stats.internal_errors += 1
            log.exception("request_failed", command=name, transport="mqtt")
            return error_fields(Reason.UNAVAILABLE, "Loyalty unavailable - go on")
        return command.reply(answer)


# ---- the broker connection ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MqttOptions:
    """How to reach the broker, and who we are there."""

    host: str
    port: int = 1883
    tls: bool = False
    ca_file: str | None = None  # None: the system's CA store
    username: str | None = None
    password: str | None = None
    client_id: str = "edge-gateway"
    keepalive_s: int = 30
    timeout_s: float = 10.0
    reconnect_first_s: float = RECONNECT_FIRST_S
    reconnect_max_s: float = RECONNECT_MAX_S
    gateway_id: str = ""
    version: str = ""

    @classmethod
    def from_url(cls, url: str, **options: Any) -> MqttOptions:
        """`mqtt://host[:1883]` or `mqtts://host[:8883]`; user and password in the url are used
        when not given otherwise."""
        parts = urlsplit(url)
        tls = parts.scheme.lower() == "mqtts" or bool(options.pop("tls", False))
        if not parts.hostname:
            raise ValueError(f"mqtt url {url!r} has no host")
        if options.get("username") is None and parts.username:
            options["username"] = unquote(parts.username)
        if options.get("password") is None and parts.password:
            options["password"] = unquote(parts.password)
        port = parts.port or (8883 if tls else 1883)
        return cls(host=parts.hostname, port=port, tls=tls, **options)

    @property
    def broker(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


ConnectionState = Literal["connecting", "connected", "stopped"]


class MqttAdapter:
    """Connects to the broker, answers requests, keeps the status topic; reconnects by itself.

    `await start()` returns at once (a broker that is down must not hold the daemon up);
    `wait_until(lambda: adapter.state == "connected")` waits for the subscription.
    """

    def __init__(self, responder: MqttResponder, options: MqttOptions) -> None:
        self.responder = responder
        self.topics = responder.topics
        self.options = options
        self.state: ConnectionState = "connecting"
        # The broker connection's availability: each outage logged once, and its end.
        self.link = Link(
            log,
            LinkEvents(
                down="mqtt_connection_lost",
                up="mqtt_reconnected",
                first_down="mqtt_unreachable",
                first_up="mqtt_connected",
            ),
            broker=options.broker,
        )
        self.connected_since: str | None = None
        self._client: aiomqtt.Client | None = None
        self._tls_context: ssl.SSLContext | None = None
        self._task: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        self._changed = asyncio.Event()
        self._stopping = False

    @property
    def stats(self) -> MqttStats:
        return self.responder.stats

    @property
    def outages(self) -> int:
        return self.link.outages

    @property
    def failed_attempts(self) -> int:
        """Connections refused or lost, in all."""
        return self.link.failures

    @property
    def last_error(self) -> str | None:
        return self.link.last_error

    def _status(self, state: str, *, since: str | None, reason: str | None = None) -> bytes:
        o = self.options
        return _encode(
            {
                "state": state,
                "since": since,
                "version": o.version,
                "store_id": self.topics.store_id,
                "gateway_id": o.gateway_id,
                "reason": reason,
            }
        )

    def _new_client(self) -> aiomqtt.Client:
        o = self.options
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = SESSION_EXPIRY_S
        return aiomqtt.Client(
            o.host,
            o.port,
            username=o.username,
            password=o.password,
            identifier=o.client_id,
            protocol=aiomqtt.ProtocolVersion.V5,
            # Sent by the broker when our connection dies without a DISCONNECT: the status says
            # offline at once, whoever watches it. `since` is unknown then, so it is null.
            will=aiomqtt.Will(
                self.topics.status,
                self._status("offline", since=None, reason="connection lost"),
                qos=1,
                retain=True,
            ),
            # A clean session until the first connection (requests queued for a previous run
            # are stale), then the same session across reconnects, so that requests published
            # while we were away are delivered. (paho's "first only" option restarts with every
            # connect() call, and aiomqtt calls connect() for every connection.)
            clean_start=not self.link.ever_up,
            properties=properties,
            keepalive=o.keepalive_s,
            timeout=o.timeout_s,
            tls_context=self._tls_context,
            max_queued_incoming_messages=10_000,
            max_inflight_messages=200,
            # A register waits for every reply: Nagle's algorithm against the broker's delayed
            # ACK costs ~40 ms a message (measured, bench/transport_latency.py).
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
        )

    async def start(self) -> None:
        o = self.options
        # Made once, here, so that an unreadable CA file stops the start with a clear error.
        self._tls_context = ssl.create_default_context(cafile=o.ca_file) if o.tls else None
        self._task = asyncio.create_task(self._run(), name="mqtt")

    async def stop(self, grace_s: float = 5.0) -> None:
        """Stop taking requests, let answers under way go out, say offline, disconnect."""
        if self._task is None:
            return
        self._stopping = True
        client = self._client
        if client is not None and self.state == "connected":
            with contextlib.suppress(aiomqtt.MqttError):
                await client.unsubscribe(self.topics.requests, timeout=grace_s)
        if self._inflight:
            await asyncio.wait(set(self._inflight), timeout=grace_s)
        if client is not None and self.state == "connected":
            status = self._status("offline", since=_utc_now(), reason="stopped")
            with contextlib.suppress(aiomqtt.MqttError):
                await client.publish(
                    self.topics.status, status, qos=1, retain=True, timeout=grace_s
                )
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
            await self._task
        self._task = None
        self._set_state("stopped")
        log.info("mqtt_stopped", broker=self.options.broker)

    async def wait_until(self, condition: Callable[[], bool]) -> None:
        """Return once `condition()` holds; it is checked at every change of state."""
        while not condition():
            await self._changed.wait()

    def _set_state(self, state: ConnectionState) -> None:
        self.state = state
        self._changed.set()
        self._changed = asyncio.Event()

    def states(self) -> dict[str, object]:
        stats = self.stats
        return {
            "state": self.state,
            "broker": self.options.broker,
            "requests": stats.requests,
            "replayed": stats.replayed,
            "errors": dict(stats.errors),
            "outages": self.outages,
            "last_error": self.last_error,
        }

    async def _run(self) -> None:
        o = self.options
        delay = o.reconnect_first_s
        while True:
            # A client per connection: aiomqtt's is reusable, but its clean-start flag is fixed.
            client = self._client = self._new_client()
            try:
                async with client:
                    await self._on_connect(client)
                    delay = o.reconnect_first_s
                    async for message in client.messages:
                        self._dispatch(client, message)
            except aiomqtt.MqttError as error:
                self._failed(error)
            except Exception as error:  # a bug here must not silence MQTT for good: log, retry
                self._failed(error, unexpected=True)
            # Jittered, so that the gateways of many stores do not all reconnect at once.
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, o.reconnect_max_s)

    async def _on_connect(self, client: aiomqtt.Client) -> None:
        await client.subscribe(self.topics.requests, qos=1)
        self.connected_since = _utc_now()
        status = self._status("online", since=self.connected_since)
        await client.publish(self.topics.status, status, qos=1, retain=True)
        self.link.succeeded(topic=self.topics.requests)
        self._set_state("connected")

    def _failed(self, error: BaseException, *, unexpected: bool = False) -> None:
        # One warning per outage; the attempts after it are counted, not logged.
        self.link.failed(error, unexpected="mqtt_adapter_error" if unexpected else None)
        self._set_state("connecting")

    def _dispatch(self, client: aiomqtt.Client, message: aiomqtt.Message) -> None:
        # A retained request comes from the broker's store when we subscribe: it is old news.
        if self._stopping or message.retain:
            self.stats.ignored += 1
            return
        properties = message.properties
        response_topic = getattr(properties, "ResponseTopic", None)
        correlation_data = getattr(properties, "CorrelationData", None)
        payload = message.payload
        if not isinstance(payload, bytes):
            payload = str(payload).encode("utf-8")
        task = asyncio.create_task(
            self._answer(
                client,
                message.topic.value,
                payload,
                response_topic if isinstance(response_topic, str) else None,
                correlation_data if isinstance(correlation_data, bytes) else None,
            )
        )
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    async def _answer(
        self,
        client: aiomqtt.Client,
        topic: str,
        payload: bytes,
        response_topic: str | None,
        correlation_data: bytes | None,
    ) -> None:
        out = await self.responder.handle(
            topic, payload, response_topic=response_topic, correlation_data=correlation_data
        )
        if out is None:
            return
        properties = None
        if out.correlation_data is not None:
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            properties.CorrelationData = out.correlation_data
        try:
            await client.publish(out.topic, out.payload, qos=1, properties=properties)
        except aiomqtt.MqttError as error:
            # The connection went meanwhile; the reply is cached, the register's resend gets it.
            self.stats.publish_failures += 1
            log.debug("mqtt_reply_not_sent", topic=out.topic, error=str(error))
