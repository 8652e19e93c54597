"""What only MQTT has: JSON bodies and their rules, correlation ids, MQTT 5 response topics, the
retained status and the last will, TLS with a password, a persistent session across a network cut.

The JSON rules are tested on `MqttResponder` directly (no broker, microseconds); the rest against a
real Mosquitto started by the test. What every transport shares is in tests/conformance.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import json
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from conformance.infra import GatewayLog, Mosquitto, free_port
from conformance.registers import MqttRegister, new_properties
from conftest import STORE_ID
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from waiting import until

from gateway.service import Gateway
from gateway.store.store import Store
from pos_adapters.mqtt import (
    MqttAdapter,
    MqttOptions,
    MqttResponder,
    Outgoing,
    Topics,
    fields_of_reply,
    reply_body,
)

CARD = "6001000000000001"
DATE = "20261123"
TOPICS = Topics("loyalty", STORE_ID)


@pytest.fixture
def responder(service: Gateway) -> MqttResponder:
    return MqttResponder(service, TOPICS)


async def ask(
    responder: MqttResponder, body: dict[str, Any] | bytes, wsid: int | str = 7, **options: Any
) -> tuple[Outgoing, dict[str, Any]]:
    payload = body if isinstance(body, bytes) else json.dumps(body).encode()
    out = await responder.handle(TOPICS.request(wsid), payload, **options)
    assert out is not None
    return out, json.loads(out.payload)


# ---- JSON replies: every field named ----------------------------------------------------------


async def test_replies_name_every_field_with_counts_as_integers(responder: MqttResponder) -> None:
    request = {"command": "IDENT", "wsid": "7", "rvc": "1", "check": "0", "token": CARD}
    out, ident = await ask(responder, {**request, "correlation_id": "c-1"})
    assert out.topic == "loyalty/S001/pos/7/resp"
    assert ident == {
        "reply": "IDENT_OK",
        "member_ref": "M1",
        "display_name": "Ann K.",
        "tier": "GOLD",
        "points_balance": 120,
        "earn_mode": "POINTS",
        "message": "Welcome Ann K.",
        "correlation_id": "c-1",
    }

    _, item = await ask(responder, {"command": "COUPON", "wsid": "7", "check": "1001",
                                    "member_ref": "M1", "code": "BDAY-M1", "subtotal": "27.40",
                                    "correlation_id": "c-2"})  # fmt: skip
    assert item["reply"] == "COUPON_OK" and item["coupon_ref"]
    assert (item["kind"], item["pos_discount_object"], item["value"], item["item_object"]) == (
        "ITEM", 102, None, 5001,
    )  # fmt: skip
    _, amount = await ask(responder, {"command": "COUPON", "wsid": 7, "check": 1001,
                                      "member_ref": "M1", "code": "WELCOME5", "subtotal": "27.40",
                                      "correlation_id": "c-3"})  # fmt: skip
    assert (amount["kind"], amount["value"], amount["item_object"]) == ("AMOUNT", "5.00", None)

    _, post = await ask(responder, {"command": "POST", "wsid": "7", "rvc": "1", "check": "1001",
                                    "business_date": DATE, "member_ref": "M1", "subtotal": "27.40",
                                    "total": "22.40", "items": "1*1001*27.40",
                                    "coupon_refs": f"{item['coupon_ref']};{amount['coupon_ref']}",
                                    "correlation_id": 4})  # fmt: skip
    assert {k: post[k] for k in ("reply", "points_earned", "points_balance", "tickets_earned",
                                 "wallet_points", "correlation_id")} == {
        "reply": "POST_OK", "points_earned": 22, "points_balance": 142, "tickets_earned": 0,
        "wallet_points": 0, "correlation_id": 4,
    }  # fmt: skip
    assert isinstance(post["receipt_lines"], list) and 1 <= len(post["receipt_lines"]) <= 8

    _, refused = await ask(responder, {**request, "token": "0000", "correlation_id": "c-5"})
    assert refused == {"reply": "IDENT_FAIL", "reason": "UNKNOWN_MEMBER",
                       "message": "Card not recognised", "correlation_id": "c-5"}  # fmt: skip
    _, pong = await ask(responder, {"command": "PING", "correlation_id": "c-6"})
    assert set(pong) == {"reply", "state", "version", "correlation_id"}


def test_a_json_reply_turns_back_into_the_same_sim_fields() -> None:
    fields = ["POST_OK", "22", "142", "0", "0", "Points  22", "Balance  142"]
    body = reply_body(fields, "x")
    assert body["receipt_lines"] == ["Points  22", "Balance  142"]
    assert fields_of_reply(body) == fields
    coupon = ["COUPON_OK", "C1", "ITEM", "102", "", "5001", "Free item"]
    assert fields_of_reply(reply_body(coupon, None)) == coupon


# ---- JSON requests: how values are accepted ---------------------------------------------------


async def test_numbers_may_be_json_integers_or_digit_strings(responder: MqttResponder) -> None:
    as_text = {"command": "COUPON", "wsid": "7", "check": "5", "member_ref": "",
               "code": "TENOFF", "subtotal": "30"}  # fmt: skip
    as_numbers = {**as_text, "wsid": 7, "check": 5, "subtotal": 30}
    _, first = await ask(responder, {**as_text, "correlation_id": "a"})
    _, second = await ask(responder, {**as_numbers, "correlation_id": "b"})
    assert first["reply"] == second["reply"] == "COUPON_OK"
    assert first["value"] == second["value"] == "10"


async def test_wsid_may_be_left_out_and_is_taken_from_the_topic(
    responder: MqttResponder, store: Store
) -> None:
    _, post = await ask(responder, {"command": "POST", "rvc": 1, "check": 77,
                                    "business_date": DATE, "member_ref": "M1", "subtotal": "5.00",
                                    "total": "5.00", "items": "", "coupon_refs": "",
                                    "correlation_id": "p"}, wsid=12)  # fmt: skip
    assert post["reply"] == "POST_OK"
    posted = await store.scalar("SELECT wsid FROM posted_checks WHERE check_no = 77")
    assert posted == 12


IDENT = {"command": "IDENT", "wsid": 7, "rvc": 1, "check": 0, "token": CARD, "correlation_id": "z"}
REFUSED: list[tuple[str, dict[str, Any], str, str]] = [
    ("float amount", {"command": "COUPON", "wsid": 7, "check": 5, "member_ref": "",
                      "code": "TENOFF", "subtotal": 27.4, "correlation_id": "z"},
     "BAD_FIELD", "subtotal: a string or an integer expected"),
    ("boolean", {**IDENT, "check": True}, "BAD_FIELD", "check: a string or an integer expected"),
    ("null", {**IDENT, "token": None}, "BAD_FIELD", "token: a string or an integer expected"),
    ("list", {**IDENT, "token": [CARD]}, "BAD_FIELD", "token: a string or an integer expected"),
    ("unknown key", {**IDENT, "tokn": CARD}, "BAD_FIELD", "unknown field 'tokn' for IDENT"),
    ("missing field", {k: v for k, v in IDENT.items() if k != "token"}, "BAD_FIELD",
     "token: missing"),
    ("wsid not the topic's", {**IDENT, "wsid": 8}, "BAD_FIELD", "wsid: 8 is not the topic's 7"),
    ("negative check", {**IDENT, "check": -1}, "BAD_FIELD", "check: digits expected"),
    ("control character", {**IDENT, "token": "60\u000701"}, "BAD_FIELD",
     "token: control character"),
    ("no command", {k: v for k, v in IDENT.items() if k != "command"}, "BAD_FIELD",
     "command: missing"),
    ("command not text", {**IDENT, "command": 1}, "BAD_FIELD", "command: a string expected"),
    ("unknown command", {**IDENT, "command": "FLY"}, "UNKNOWN_COMMAND", "unknown command 'FLY'"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("body", "reason", "message"), [r[1:] for r in REFUSED], ids=[r[0] for r in REFUSED]
)
async def test_a_value_outside_the_rules_is_refused_by_name(
    responder: MqttResponder, service: Gateway, body: dict[str, Any], reason: str, message: str
) -> None:
    _, reply = await ask(responder, body)
    assert reply == {"reply": "ERROR", "reason": reason, "message": message,
                     "correlation_id": "z"}  # fmt: skip
    assert responder.stats.errors[reason] == 1
    assert service.stats.requests.total() == 0


MALFORMED: list[tuple[str, bytes, str, str]] = [
    ("not JSON", b'{"command": "PING", "correlation_', "BAD_FRAME", "payload is not JSON"),
    ("not an object", b'["PING"]', "BAD_FRAME", "payload is not a JSON object"),
    ("not UTF-8", b'{"command": "\xff"}', "BAD_FRAME", "payload is not UTF-8"),
    ("NaN", b'{"command": "PING", "correlation_id": NaN}', "BAD_FRAME", "payload is not JSON"),
    ("too deep", b"[" * 60_000, "BAD_FRAME", "payload is not JSON"),
    ("too large", b" " * 70_000, "FRAME_TOO_LARGE", "payload over 65536 bytes"),
    ("no correlation id", b'{"command": "PING"}', "BAD_FIELD", "correlation_id: missing"),
    ("correlation id a float", b'{"command": "PING", "correlation_id": 1.5}', "BAD_FIELD",
     "correlation_id: a string or an integer expected"),
    ("correlation id empty", b'{"command": "PING", "correlation_id": ""}', "BAD_FIELD",
     "correlation_id: 1 to 128 characters expected"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("payload", "reason", "message"), [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED]
)
async def test_a_malformed_payload_gets_error_without_correlation_id_and_is_counted(
    responder: MqttResponder, service: Gateway, payload: bytes, reason: str, message: str
) -> None:
    out, reply = await ask(responder, payload)
    assert out.topic == TOPICS.reply(7)
    assert reply == {"reply": "ERROR", "reason": reason, "message": message,
                     "correlation_id": None}  # fmt: skip
    assert responder.stats.errors[reason] == 1
    assert service.stats.requests.total() == 0


async def test_a_topic_level_that_is_no_wsid_is_answered_on_its_own_reply_topic(
    responder: MqttResponder,
) -> None:
    out, reply = await ask(responder, {"command": "PING", "correlation_id": "q"}, wsid="till-1")
    assert out.topic == "loyalty/S001/pos/till-1/resp"
    assert (reply["reason"], reply["correlation_id"]) == ("BAD_FIELD", "q")
    assert await responder.handle("loyalty/S001/other/7/req", b"{}") is None


async def test_the_response_topic_is_used_unless_it_holds_a_wildcard(
    responder: MqttResponder,
) -> None:
    ping = {"command": "PING", "correlation_id": "r1"}
    out, _ = await ask(responder, ping, response_topic="till/7/inbox", correlation_data=b"\x01")
    assert (out.topic, out.correlation_data) == ("till/7/inbox", b"\x01")
    out, _ = await ask(responder, {**ping, "correlation_id": "r2"}, response_topic="till/+/x")
    assert out.topic == TOPICS.reply(7)


def test_topics_refuse_wildcards_in_the_prefix() -> None:
    with pytest.raises(ValueError, match="prefix"):
        Topics("loyalty/#", STORE_ID)


def test_options_follow_the_url() -> None:
    secure = MqttOptions.from_url("mqtts://user%40x:pw@broker.example")
    assert (secure.host, secure.port, secure.tls) == ("broker.example", 8883, True)
    assert (secure.username, secure.password) == ("user@x", "pw")
    plain = MqttOptions.from_url("mqtt://[::1]", username="me")
    assert (plain.host, plain.port, plain.tls, plain.username) == ("::1", 1883, False, "me")
    assert MqttOptions.from_url("mqtt://broker", tls=True).tls


# ---- redelivery -------------------------------------------------------------------------------

POST = {"command": "POST", "wsid": 7, "rvc": 1, "check": 501, "business_date": DATE,
        "member_ref": "M1", "subtotal": "10.00", "total": "10.00", "items": "",
        "coupon_refs": "", "correlation_id": "post-501"}  # fmt: skip


async def test_a_redelivery_arriving_while_the_first_copy_runs_is_executed_once(
    responder: MqttResponder, service: Gateway, store: Store
) -> None:
    (_, first), (_, second) = await asyncio.gather(ask(responder, POST), ask(responder, POST))
    assert first == second and first["reply"] == "POST_OK"
    assert responder.stats.replayed == 1
    assert service.stats.requests[("POST", "ok")] == 1
    assert await store.ledger_total("M1") == (10, 0, 0)


async def test_a_redelivery_with_its_keys_in_another_order_is_still_a_redelivery(
    responder: MqttResponder, service: Gateway
) -> None:
    await ask(responder, POST)
    await ask(responder, dict(reversed(list(POST.items()))))
    assert responder.stats.replayed == 1
    assert service.stats.requests[("POST", "ok")] == 1


async def test_the_same_correlation_id_on_another_workstation_is_another_request(
    responder: MqttResponder, service: Gateway
) -> None:
    await ask(responder, {**IDENT, "wsid": 7}, wsid=7)
    await ask(responder, {**IDENT, "wsid": 8}, wsid=8)
    assert responder.stats.replayed == 0
    assert service.stats.requests[("IDENT", "ok")] == 2


async def test_a_correlation_id_reused_for_another_request_runs_as_new(
    responder: MqttResponder, service: Gateway
) -> None:
    # A register whose counter restarted after a reboot: same id, another request.
    _, first = await ask(responder, {**IDENT, "correlation_id": 1})
    _, second = await ask(responder, {"command": "PING", "correlation_id": 1})
    assert (first["reply"], second["reply"]) == ("IDENT_OK", "PONG")
    assert responder.stats.correlation_reused == 1
    assert responder.stats.replayed == 0


async def test_a_redelivery_after_the_replay_window_runs_again(service: Gateway) -> None:
    responder = MqttResponder(service, TOPICS, replay_window_s=0.0)
    await ask(responder, IDENT)
    await ask(responder, IDENT)
    assert responder.stats.replayed == 0
    assert service.stats.requests[("IDENT", "ok")] == 2


# ---- against a real broker --------------------------------------------------------------------


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[Mosquitto]:
    started = Mosquitto(tmp_path / "broker")
    await started.start()
    yield started
    await started.stop()


@contextlib.asynccontextmanager
async def running(responder: MqttResponder, url: str, **options: Any) -> AsyncIterator[MqttAdapter]:
    settings = {"client_id": "gw-test", "reconnect_first_s": 0.01, "reconnect_max_s": 0.05,
                "version": "9.9", "gateway_id": "gw1", **options}  # fmt: skip
    adapter = MqttAdapter(responder, MqttOptions.from_url(url, **settings))
    await adapter.start()
    try:
        yield adapter
    finally:
        await adapter.stop(grace_s=1.0)


async def connected(adapter: MqttAdapter) -> None:
    await until(lambda: adapter.state == "connected")


@contextlib.asynccontextmanager
async def register(port: int, wsid: int = 7) -> AsyncIterator[MqttRegister]:
    made = MqttRegister(wsid, "127.0.0.1", port, TOPICS)
    await made.connect()
    try:
        yield made
    finally:
        await made.close()


async def test_the_reply_goes_to_the_mqtt5_response_topic_with_the_correlation_data(
    broker: Mosquitto, responder: MqttResponder
) -> None:
    async with running(responder, broker.url) as adapter, register(broker.port) as till:
        await connected(adapter)
        assert till._client is not None
        inbox = "till/7/private-inbox"
        await till._client.subscribe(inbox, qos=1)
        properties = new_properties(ResponseTopic=inbox, CorrelationData=b"\x00\x01corr")
        received: asyncio.Future[aiomqtt.Message] = asyncio.get_running_loop().create_future()

        async with aiomqtt.Client(
            "127.0.0.1", broker.port, protocol=aiomqtt.ProtocolVersion.V5
        ) as watcher:
            await watcher.subscribe(inbox, qos=1)

            async def first_message() -> None:
                async for message in watcher.messages:
                    received.set_result(message)
                    return

            reader = asyncio.create_task(first_message())
            reply = await till.send(IDENT, properties=properties)
            message = await asyncio.wait_for(received, 5)
            await reader
        assert reply["reply"] == "IDENT_OK"
        assert str(message.topic) == inbox and message.qos == 1
        assert getattr(message.properties, "CorrelationData", None) == b"\x00\x01corr"


async def read_status(port: int) -> dict[str, Any]:
    """The retained status, as a newcomer sees it."""
    async with aiomqtt.Client("127.0.0.1", port, protocol=aiomqtt.ProtocolVersion.V5) as reader:
        await reader.subscribe(TOPICS.status, qos=1)
        async for message in reader.messages:
            assert message.retain
            assert isinstance(message.payload, bytes)
            status: dict[str, Any] = json.loads(message.payload)
            return status
    raise AssertionError("no status")


async def test_the_status_is_retained_online_and_set_offline_by_a_clean_stop(
    broker: Mosquitto, responder: MqttResponder
) -> None:
    async with running(responder, broker.url) as adapter:
        await connected(adapter)
        online = await read_status(broker.port)
    offline = await read_status(broker.port)

    since = dt.datetime.fromisoformat(online["since"].replace("Z", "+00:00"))
    assert abs((dt.datetime.now(dt.UTC) - since).total_seconds()) < 60
    assert online == {"state": "online", "since": online["since"], "version": "9.9",
                      "store_id": STORE_ID, "gateway_id": "gw1", "reason": None}  # fmt: skip
    assert offline["state"] == "offline" and offline["reason"] == "stopped"
    assert offline["since"] >= online["since"]
    assert adapter.state == "stopped"


async def test_a_broker_that_is_down_at_start_is_logged_once_and_joined_when_it_comes(
    tmp_path: Path, responder: MqttResponder
) -> None:
    broker = Mosquitto(tmp_path / "late")
    broker.port = free_port()
    with GatewayLog() as gateway_log:
        async with running(responder, broker.url) as adapter:
            await until(lambda: adapter.outages == 1 and adapter.last_error is not None)
            await broker.start()
            try:
                await connected(adapter)
                async with register(broker.port) as till:
                    assert (await till.request("PING"))[0] == "PONG"
            finally:
                await broker.stop()
    assert len(gateway_log.events("mqtt_unreachable")) == 1
    (joined,) = gateway_log.events("mqtt_connected")
    assert joined["failures"] >= 1


class CuttableLink:
    """A TCP relay between the gateway and the broker, whose connections can be cut and whose
    port refuses connections until it is restored: a network cut with the broker still up."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._relay, "127.0.0.1", self.port, reuse_address=True
        )
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers |= {writer, up_writer}

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            sink.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def cut(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()
        await self._server.wait_closed()
        self._server = None


async def test_requests_published_while_the_gateways_link_is_cut_are_answered_when_it_returns(
    broker: Mosquitto, responder: MqttResponder, service: Gateway
) -> None:
    link = CuttableLink(broker.port)
    await link.start()
    async with (
        running(responder, f"mqtt://127.0.0.1:{link.port}") as adapter,
        register(broker.port) as till,
    ):
        await connected(adapter)
        assert (await till.request("PING"))[0] == "PONG"

        await link.cut()
        await until(lambda: adapter.state == "connecting")
        published = asyncio.Event()
        body = {**IDENT, "correlation_id": "while-away"}
        answer = asyncio.create_task(till.send(body, published=published))
        await published.wait()  # the broker holds it for the gateway's session
        assert service.stats.requests[("IDENT", "ok")] == 0

        await link.start()  # the same port again
        reply = await answer
        assert reply["reply"] == "IDENT_OK" and reply["correlation_id"] == "while-away"
        assert adapter.outages == 1
    await link.cut()


# ---- TLS and a password -----------------------------------------------------------------------


def write_certificates(directory: Path) -> tuple[Path, Path, Path, Path]:
    """A CA, and a server certificate for 127.0.0.1 it signed; plus a CA nobody trusts."""
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)

    def certificate(
        subject: str,
        key: ec.EllipticCurvePrivateKey,
        issuer: tuple[str, ec.EllipticCurvePrivateKey],
    ) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer[0])]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
        )
        if subject == issuer[0]:
            builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=0), True)
        else:
            san = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
            builder = builder.add_extension(san, critical=False)
        return builder.sign(issuer[1], hashes.SHA256())

    def pem(path: Path, data: bytes) -> Path:
        path.write_bytes(data)
        return path

    ca_key, other_key, server_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    ca = certificate("test CA", ca_key, ("test CA", ca_key))
    other = certificate("other CA", other_key, ("other CA", other_key))
    server = certificate("broker", server_key, ("test CA", ca_key))
    key_pem = server_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return (
        pem(directory / "ca.pem", ca.public_bytes(serialization.Encoding.PEM)),
        pem(directory / "other-ca.pem", other.public_bytes(serialization.Encoding.PEM)),
        pem(directory / "server.pem", server.public_bytes(serialization.Encoding.PEM)),
        pem(directory / "server.key", key_pem),
    )


@pytest.fixture
def certificates(tmp_path: Path) -> tuple[Path, Path, Path, Path, Path]:
    """CA, untrusted CA, server certificate and key, and a Mosquitto password file."""
    ca, other_ca, cert, key = write_certificates(tmp_path / "tls")
    passwords = tmp_path / "tls" / "passwords"
    subprocess.run(
        ["mosquitto_passwd", "-c", "-b", str(passwords), "store-042", "s3cret pass"], check=True
    )
    return ca, other_ca, cert, key, passwords


@pytest.fixture
async def secure_broker(
    tmp_path: Path, certificates: tuple[Path, Path, Path, Path, Path]
) -> AsyncIterator[tuple[Mosquitto, Path, Path]]:
    ca, other_ca, cert, key, passwords = certificates
    extra = f"cafile {ca}\ncertfile {cert}\nkeyfile {key}\npassword_file {passwords}\n"
    started = Mosquitto(tmp_path / "secure", extra=extra, anonymous=False)
    await started.start()
    yield started, ca, other_ca
    await started.stop()


async def test_tls_with_a_password(
    secure_broker: tuple[Mosquitto, Path, Path], responder: MqttResponder
) -> None:
    broker, ca, _ = secure_broker
    url = f"mqtts://127.0.0.1:{broker.port}"
    credentials = {"username": "store-042", "password": "s3cret pass"}
    async with running(responder, url, ca_file=str(ca), **credentials) as adapter:
        await connected(adapter)
        till = MqttRegister(
            7, "127.0.0.1", broker.port, TOPICS,
            tls_context=ssl.create_default_context(cafile=str(ca)), **credentials,
        )  # fmt: skip
        await till.connect()
        try:
            assert (await till.request("IDENT", "7", "1", "0", CARD))[:2] == ["IDENT_OK", "M1"]
        finally:
            await till.close()
    assert adapter.states()["broker"] == url


@pytest.mark.parametrize(
    ("trusted", "password", "why"),
    [(True, "wrong", "Not authorized"), (False, "s3cret pass", "CERTIFICATE_VERIFY_FAILED")],
    ids=["wrong password", "untrusted certificate"],
)
async def test_a_broker_that_refuses_us_is_retried_and_logged_once(
    secure_broker: tuple[Mosquitto, Path, Path],
    responder: MqttResponder,
    trusted: bool,
    password: str,
    why: str,
) -> None:
    broker, ca, other_ca = secure_broker
    url = f"mqtts://127.0.0.1:{broker.port}"
    ca_file = str(ca if trusted else other_ca)
    with GatewayLog() as gateway_log:
        async with running(
            responder, url, ca_file=ca_file, username="store-042", password=password
        ) as adapter:
            await until(lambda: adapter.failed_attempts >= 3)
            assert adapter.state == "connecting"
            assert adapter.last_error is not None and why in adapter.last_error
    (unreachable,) = gateway_log.events("mqtt_unreachable")
    assert why in unreachable["error"]
    assert gateway_log.events("mqtt_connected") == []
