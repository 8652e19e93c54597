"""Configuration: one TOML file plus EDGE_GATEWAY_* environment variables, validated at start-up.

Priority, highest first: keyword overrides given to `load_settings`, environment variables, the TOML
file, defaults. Every model forbids unknown keys so a typo in the file stops the daemon with a
message naming the key instead of being silently ignored. Secrets never live in this file: the
keys that point at them end in `_file`, and anything that looks like a secret is masked whenever
settings are shown (`render_effective`, `ConfigError`).
"""

from __future__ import annotations

import codecs
import contextvars
import datetime
import ipaddress
import os
import re
import socket
import sys
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any, Literal, Self
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)
from pydantic_settings.exceptions import SettingsError

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "ENV_CONFIG_PATH",
    "ENV_PREFIX",
    "AdminSettings",
    "CentralSettings",
    "ConfigError",
    "CouponSettings",
    "LogSettings",
    "MqttSettings",
    "OfflineSettings",
    "SerialPortSettings",
    "SerialSettings",
    "Settings",
    "SimSettings",
    "StorageSettings",
    "currency_decimals",
    "is_secret_key",
    "load_settings",
    "mask_url_credentials",
    "render_effective",
]

DEFAULT_CONFIG_PATH = (
    Path(os.environ.get("PROGRAMDATA", "C:/ProgramData")) / "edge-gateway" / "gateway.toml"
    if sys.platform == "win32"
    else Path("/etc/edge-gateway/gateway.toml")
)
ENV_PREFIX = "EDGE_GATEWAY_"
ENV_CONFIG_PATH = "EDGE_GATEWAY_CONFIG"
MASK = "***"

# The file chosen by load_settings for the Settings being built. A context variable rather than a
# class attribute, so that concurrent loads (tests, the CLI beside a daemon) cannot mix files.
_toml_path: contextvars.ContextVar[Path | None] = contextvars.ContextVar(
    "edge_gateway_toml_path", default=None
)


PLACEHOLDER_STORE_ID = "CHANGE-ME"  # what the package's configuration file ships with


class ConfigError(Exception):
    """The configuration cannot be used. `str()` is the message for the operator."""

    def __init__(
        self, message: str, *, path: Path | None = None, problems: Sequence[str] = ()
    ) -> None:
        super().__init__(message)
        self.path = path
        self.problems: tuple[str, ...] = tuple(problems)


# ---------------------------------------------------------------------------------------------
# Money and time helpers


_ZERO_DECIMAL_CURRENCIES = frozenset(
    {"JPY", "KRW", "CLP", "ISK", "VND", "XAF", "XOF", "XPF"}
    | {"PYG", "UGX", "RWF", "KMF", "GNF", "DJF", "BIF", "VUV"}
)
_THREE_DECIMAL_CURRENCIES = frozenset({"BHD", "KWD", "OMR", "JOD", "TND", "LYD", "IQD"})


def currency_decimals(code: str) -> int:
    """ISO 4217 minor units of a currency: how many decimals its amounts carry."""
    code = code.upper()
    if code in _ZERO_DECIMAL_CURRENCIES:
        return 0
    if code in _THREE_DECIMAL_CURRENCIES:
        return 3
    return 2


def _machine_tzinfo() -> datetime.tzinfo:
    # A fixed offset from astimezone() would be wrong after the next DST change in a daemon that
    # runs for months, so prefer a real zone: $TZ when it names one, else /etc/localtime.
    tz_env = os.environ.get("TZ", "").lstrip(":")
    if tz_env:
        try:
            return ZoneInfo(tz_env)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            pass
    target = os.path.realpath("/etc/localtime")
    if "/zoneinfo/" in target:
        try:
            return ZoneInfo(target.split("/zoneinfo/", 1)[1])
        except (ZoneInfoNotFoundError, ValueError, OSError):
            pass
    try:
        with open("/etc/localtime", "rb") as f:
            return ZoneInfo.from_file(f, key="localtime")
    except (OSError, ValueError):
        pass
    local = datetime.datetime.now().astimezone().tzinfo
    return local if local is not None else datetime.UTC


# ---------------------------------------------------------------------------------------------
# Secrets


_URL_CREDENTIALS_RE = re.compile(r"(?P<prefix>[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s]*):[^@/\s]*@")


def is_secret_key(name: str) -> bool:
    """A key holds a secret if its name says so; `*_file` keys hold paths, which are not secret."""
    lowered = name.lower()
    if lowered.endswith("_file"):
        return False
    return any(word in lowered for word in ("password", "token", "secret"))


def mask_url_credentials(text: str) -> str:
    """`mqtt://user:pw@host` -> `mqtt://user:***@host`; anything else unchanged."""
    return _URL_CREDENTIALS_RE.sub(rf"\g<prefix>:{MASK}@", text)


def _masked(key: str, value: Any) -> Any:
    if value is None:
        return None
    if is_secret_key(key):
        return MASK
    if isinstance(value, str):
        return mask_url_credentials(value)
    if isinstance(value, Mapping):
        return {k: _masked(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_masked(key, v) for v in value]
    return value


# ---------------------------------------------------------------------------------------------
# Reusable field types


def _empty_is_none(value: Any) -> Any:
    # TOML has no null, and an environment variable cannot be unset by another layer, so an empty
    # string is how a file or EDGE_GATEWAY_CENTRAL__URL="" says "not set".
    if isinstance(value, str) and not value.strip():
        return None
    return value


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def _check_cidr(value: str) -> str:
    try:
        network = ipaddress.ip_network(value.strip(), strict=False)
    except ValueError:
        raise ValueError("not an IP network such as 10.0.0.0/24, ::1/128 or 10.0.0.7") from None
    # Normalised so the effective configuration shows exactly which addresses are let in.
    return str(network)


def _check_source_pattern(value: str) -> str:
    # Matched against source ids without their padding spaces, so the pattern loses its own.
    value = value.strip()
    if not value or len(value) > 128 or not (value.isascii() and value.isprintable()):
        raise ValueError("must be 1 to 128 printable ASCII characters, such as *LOYAL or 12*")
    return value


OptionalPath = Annotated[Path | None, BeforeValidator(_empty_is_none)]
OptionalStr = Annotated[str | None, BeforeValidator(_empty_is_none)]
Cidr = Annotated[str, AfterValidator(_check_cidr)]
# A source id pattern (fnmatch: * any run, ? one character) as the dashboard shows source ids.
SourcePattern = Annotated[str, AfterValidator(_check_source_pattern)]
Port = Annotated[int, Field(ge=0, le=65535)]
PositiveSeconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]


def _setting_error(loc: tuple[str | int, ...], message: str, value: Any) -> PydanticCustomError:
    """An error for a cross-field rule that names the key it is about, not the whole section."""
    return PydanticCustomError("invalid_setting", message, {"loc": loc, "value": value})


def _is_loopback_host(host: str) -> bool:
    host = host.lower().rstrip(".")
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def _check_url(value: str, schemes: tuple[str, ...]) -> str:
    parts = urlsplit(value)
    if parts.scheme.lower() not in schemes:
        wanted = " or ".join(f"{s}://" for s in schemes)
        raise ValueError(f"must start with {wanted}")
    try:
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number in range
    except ValueError:
        raise ValueError("has an invalid port") from None
    if not parts.hostname:
        raise ValueError("has no host")
    return value


# ---------------------------------------------------------------------------------------------
# Sections


class CentralSettings(BaseModel):
    """How to reach the central loyalty server. No url means the gateway runs standalone."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: OptionalStr = None
    token_file: OptionalPath = None
    ca_file: OptionalPath = None
    client_cert: OptionalPath = None
    client_key: OptionalPath = None
    allow_insecure: bool = False
    timeout_s: PositiveSeconds = 10.0
    batch_size: Annotated[int, Field(ge=1, le=500)] = 500
    refresh_interval_s: PositiveSeconds = 30.0
    heartbeat_interval_s: PositiveSeconds = 60.0
    authorization_budget_ms: Annotated[int, Field(gt=0)] = 300
    backoff_max_s: PositiveSeconds = 60.0  # longest wait between retries (addition to DESIGN)
    # A full snapshot may remove at most this share of the cached members or coupons at once;
    # more needs `edge-gateway sync --full --allow-mass-removal` (addition to DESIGN).
    max_removal_share: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)] = 0.5
    # Before a new store's first download of central's snapshot file, the daemon waits a random
    # 0..this many seconds, so a fleet started at once does not download at once; `sync --full`
    # does not wait (addition to DESIGN).
    bootstrap_jitter_s: Annotated[float, Field(ge=0, le=3600, allow_inf_nan=False)] = 30.0

    @field_validator("url")
    @classmethod
    def _url_is_http(cls, value: str | None) -> str | None:
        return None if value is None else _check_url(value, ("http", "https"))

    @model_validator(mode="after")
    def _transport_is_safe(self) -> Self:
        if self.url is not None and not self.allow_insecure:
            parts = urlsplit(self.url)
            if parts.scheme.lower() == "http" and not _is_loopback_host(parts.hostname or ""):
                raise _setting_error(
                    ("url",),
                    "plain http:// is allowed only to a loopback host; use https:// "
                    "(or set central.allow_insecure = true for a test bench)",
                    self.url,
                )
        if self.client_key is not None and self.client_cert is None:
            raise _setting_error(
                ("client_key",), "client_key needs client_cert", str(self.client_key)
            )
        return self


class SimSettings(BaseModel):
    """The MICROS SIM/PMS-style TCP listener the registers connect to."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    host: str = "127.0.0.1"
    port: Port = 5009
    allow: list[Cidr] = Field(default_factory=lambda: ["127.0.0.0/8", "::1/128"])
    encoding: str = "cp1252"
    max_frame: Annotated[int, Field(ge=256)] = 32768
    max_connections: Annotated[int, Field(ge=1, le=100_000)] = 512
    max_connections_per_peer: Annotated[int, Field(ge=1, le=100_000)] = 64
    # Seconds without a complete frame before a connection is closed (0: never). Registers stay
    # connected for days, so this is long; it only matters to reclaim abandoned connections.
    idle_timeout_s: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 3600.0
    read_timeout_s: PositiveSeconds = 30.0
    # How a reply carries its values (docs/protocol.md, "Reply style"; addition to DESIGN): one
    # FS-separated field each (DESIGN section 2), or "pipe": joined by | into one field, as the
    # public ISL scripts read replies. `pipe_reply_sources`: source ids (patterns) answered in
    # the pipe style whatever `reply_style` says. TCP and serial lines alike.
    reply_style: Literal["fields", "pipe"] = "fields"
    pipe_reply_sources: Annotated[list[SourcePattern], Field(max_length=100)] = Field(
        default_factory=list
    )

    @field_validator("encoding")
    @classmethod
    def _encoding_exists(cls, value: str) -> str:
        try:
            codecs.lookup(value)
            "".encode(value)  # rejects bytes-to-bytes codecs such as base64
        except LookupError as exc:
            raise ValueError(f"not a text encoding Python knows ({exc})") from None
        # The framing bytes and digits must mean the same in the code page (not UTF-16, EBCDIC).
        probe = "\x01\x02\x03\x04\x1c09AZaz "
        try:
            ascii_compatible = probe.encode(value) == probe.encode("ascii")
        except (UnicodeError, LookupError):
            ascii_compatible = False
        if not ascii_compatible:
            raise ValueError("must be ASCII-compatible (cp1252, latin-1, utf-8, ...)")
        return value

    def allowed_networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        """The networks whose clients may connect; a fresh list on every call."""
        return [ipaddress.ip_network(cidr, strict=False) for cidr in self.allow]


def _check_stopbits(value: float) -> float:
    # typing.Literal cannot hold 1.5, so the three values pyserial knows are checked here.
    if value not in (1, 1.5, 2):
        raise ValueError("must be 1, 1.5 or 2")
    return value


class SerialPortSettings(BaseModel):
    """One serial line to a register or POS controller."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    device: Annotated[str, Field(min_length=1)]
    baudrate: Annotated[int, Field(gt=0)] = 9600
    parity: Literal["N", "E", "O", "M", "S"] = "N"
    stopbits: Annotated[int | float, AfterValidator(_check_stopbits)] = 1
    bytesize: Literal[5, 6, 7, 8] = 8


class SerialSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    ports: list[SerialPortSettings] = Field(default_factory=list)

    @model_validator(mode="after")
    def _devices_are_distinct(self) -> Self:
        seen: set[str] = set()
        for index, port in enumerate(self.ports):
            if port.device in seen:
                raise _setting_error(
                    ("ports", index, "device"), "the same device is listed twice", port.device
                )
            seen.add(port.device)
        return self


class MqttSettings(BaseModel):
    """The MQTT broker registers may talk through. No url means MQTT is off."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: OptionalStr = None
    prefix: Annotated[str, Field(min_length=1)] = "loyalty"
    username: OptionalStr = None
    password_file: OptionalPath = None
    tls: bool = False
    ca_file: OptionalPath = None  # CA bundle for the broker's certificate (addition to DESIGN)

    @field_validator("url")
    @classmethod
    def _url_is_mqtt(cls, value: str | None) -> str | None:
        return None if value is None else _check_url(value, ("mqtt", "mqtts"))

    @property
    def uses_tls(self) -> bool:
        """TLS is on when asked for, or implied by an mqtts:// url."""
        return self.tls or (self.url is not None and self.url.lower().startswith("mqtts://"))


class AdminSettings(BaseModel):
    """The local admin HTTP API and metrics."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = "127.0.0.1"
    port: Port = 8765
    token_file: OptionalPath = None
    # Host names the API answers for besides localhost and its own address (DNS rebinding).
    host_names: list[str] = Field(default_factory=list)
    max_connections: Annotated[int, Field(ge=1, le=10_000)] = 64  # addition to DESIGN
    # A connection must finish its request within this, and is closed after this long idle.
    request_timeout_s: PositiveSeconds = 10.0  # addition to DESIGN

    @model_validator(mode="after")
    def _exposed_only_with_token(self) -> Self:
        if self.token_file is None and not _is_loopback_host(self.host):
            raise _setting_error(
                ("host",),
                "the admin API may listen beyond localhost only with admin.token_file set",
                self.host,
            )
        return self


class ReceiptSettings(BaseModel):
    """What the gateway puts on the customer's receipt."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Characters per receipt line: 24 is what a MICROS check information line holds.
    line_width: Annotated[int, Field(ge=16, le=64)] = 24


class CouponSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    reservation_ttl_s: Annotated[int, Field(gt=0)] = 7200
    # A COUPON on check 0 (no check open yet) holds the coupon only this long.
    unbound_reservation_ttl_s: Annotated[int, Field(gt=0)] = 600


def _check_clock_time(value: str) -> str:
    if not re.fullmatch(r"([01][0-9]|2[0-3]):[0-5][0-9]", value):
        raise ValueError("must be a time of day HH:MM, e.g. 04:30")
    return value


class CatalogSettings(BaseModel):
    """The POS menu sent to central once a day (an addition to DESIGN.md section 4)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    export_file: OptionalPath = None
    encoding: str = "cp1252"
    push_at: Annotated[str, AfterValidator(_check_clock_time)] = "04:30"


def _amount_as_text(value: Any) -> Any:
    if isinstance(value, bool):
        return value  # let the str type refuse it
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        raise ValueError('write the amount as a string, e.g. "10.00"')
    return value


_AMOUNT_RE = re.compile(r"[0-9]+(\.[0-9]+)?")


def _check_amount(value: str | None) -> str | None:
    if value is not None and not _AMOUNT_RE.fullmatch(value):
        raise ValueError('must be a non-negative decimal amount such as "10.00"')
    return value


class OfflineSettings(BaseModel):
    """What the gateway decides alone while central is unreachable (only with a central url)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    coupon_policy: Literal["allow", "deny", "allow_up_to"] = "allow"
    coupon_max_amount: Annotated[
        str | None,
        BeforeValidator(_amount_as_text),
        BeforeValidator(_empty_is_none),
        AfterValidator(_check_amount),
    ] = None

    @model_validator(mode="after")
    def _limit_given_when_needed(self) -> Self:
        if self.coupon_policy == "allow_up_to" and self.coupon_max_amount is None:
            raise _setting_error(
                ("coupon_max_amount",),
                'required when coupon_policy is "allow_up_to"',
                None,
            )
        return self


class StorageSettings(BaseModel):
    """Disk limits: the gateway shares its disk with the POS server and must not fill it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_db_mb: Annotated[int, Field(ge=0)] = 0
    min_free_mb: Annotated[int, Field(ge=0)] = 64
    # Events kept in memory while the disk refuses them (full disk); beyond it the oldest are
    # dropped, counted and logged (addition to DESIGN).
    max_pending_events: Annotated[int, Field(ge=100)] = 100_000


class LogSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    level: Annotated[Literal["debug", "info", "warning", "error"], BeforeValidator(_lower)] = "info"
    format: Annotated[Literal["auto", "json", "console"], BeforeValidator(_lower)] = "auto"
    file: OptionalPath = None  # a rotating log file instead of stderr (the Windows service)


class _TomlFile(TomlConfigSettingsSource):
    # Accept a UTF-8 byte-order mark: Windows editors add one, and tomllib rejects it.
    def _read_file(self, file_path: Any) -> dict[str, Any]:
        with file_path.open(mode="rb") as f:
            return tomllib.loads(f.read().decode("utf-8-sig"))


class Settings(BaseSettings):
    """The whole configuration of one gateway. Build it with `load_settings`."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
        case_sensitive=False,
    )

    store_id: str
    gateway_id: Annotated[str, Field(min_length=1)] = Field(default_factory=socket.gethostname)
    data_dir: Path = Path("/var/lib/edge-gateway")
    timezone: OptionalStr = None
    currency: str = "EUR"
    rules_file: OptionalPath = None  # a rules document (JSON) for a store without central
    locale: str = "en"  # how receipt lines write amounts: "de" -> 5,00 €, "en" -> €5.00

    central: CentralSettings = Field(default_factory=CentralSettings)
    sim: SimSettings = Field(default_factory=SimSettings)
    serial: SerialSettings = Field(default_factory=SerialSettings)
    mqtt: MqttSettings = Field(default_factory=MqttSettings)
    admin: AdminSettings = Field(default_factory=AdminSettings)
    receipt: ReceiptSettings = Field(default_factory=ReceiptSettings)
    coupons: CouponSettings = Field(default_factory=CouponSettings)
    catalog: CatalogSettings = Field(default_factory=CatalogSettings)
    offline: OfflineSettings = Field(default_factory=OfflineSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    log: LogSettings = Field(default_factory=LogSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        path = _toml_path.get()
        if path is None:
            return (init_settings, env_settings)
        return (init_settings, env_settings, _TomlFile(settings_cls, toml_file=path))

    @field_validator("store_id")
    @classmethod
    def _store_id_shape(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,32}", value):
            raise ValueError("must be 1 to 32 letters, digits, '_' or '-'")
        return value

    @field_validator("timezone")
    @classmethod
    def _timezone_exists(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError, OSError):
                raise ValueError("not an IANA time zone name, e.g. Europe/Paris") from None
        return value

    @field_validator("currency")
    @classmethod
    def _currency_shape(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Z]{3}", value):
            raise ValueError("must be an ISO 4217 code: three upper-case letters, e.g. EUR")
        return value

    @model_validator(mode="after")
    def _amounts_fit_currency(self) -> Self:
        amount = self.offline.coupon_max_amount
        if amount is not None:
            decimals = currency_decimals(self.currency)
            if Decimal(amount) != Decimal(amount).quantize(Decimal(1).scaleb(-decimals)):
                raise _setting_error(
                    ("offline", "coupon_max_amount"),
                    f"has more decimals than {self.currency} allows ({decimals})",
                    amount,
                )
        return self

    def placeholder_problem(self) -> str | None:
        """What to set when the configuration still has the package's placeholder store id
        (a gateway must never run, or pass a check, as store `CHANGE-ME`)."""
        if self.store_id.upper() != PLACEHOLDER_STORE_ID:
            return None
        return (
            f'store_id is still the placeholder "{PLACEHOLDER_STORE_ID}": set it to this'
            ' store\'s id as central knows it (store_id = "S0412", for example) in the'
            f" configuration file ({DEFAULT_CONFIG_PATH} unless --config says another), or"
            " EDGE_GATEWAY_STORE_ID"
        )

    def tzinfo(self) -> datetime.tzinfo:
        """The store's time zone: the configured one, else the machine's."""
        if self.timezone is not None:
            return ZoneInfo(self.timezone)
        return _machine_tzinfo()

    @property
    def database_path(self) -> Path:
        return self.data_dir / "gateway.db"

    @property
    def offline_coupon_max_minor(self) -> int | None:
        """`offline.coupon_max_amount` in minor units of the store currency."""
        amount = self.offline.coupon_max_amount
        if amount is None:
            return None
        try:
            return int(Decimal(amount).scaleb(currency_decimals(self.currency)))
        except InvalidOperation:  # pragma: no cover - validated at load
            return None


# ---------------------------------------------------------------------------------------------
# Loading


def _choose_path(path: Path | None) -> Path | None:
    if path is not None:
        return path
    from_env = os.environ.get(ENV_CONFIG_PATH, "").strip()
    if from_env:
        return Path(from_env)
    if DEFAULT_CONFIG_PATH.is_file():
        return DEFAULT_CONFIG_PATH
    return None


def _env_name(loc: Sequence[str | int]) -> str | None:
    """The environment variable that sets the value at `loc` (a section key, or a top-level key)."""
    if not loc or not isinstance(loc[0], str):
        return None
    keys = [loc[0]]
    if len(loc) > 1 and isinstance(loc[1], str):
        keys.append(loc[1])
    return ENV_PREFIX + "__".join(keys).upper()


def _env_is_set(name: str) -> bool:
    return any(key.upper() == name for key in os.environ)


def _dotted(loc: Sequence[str | int]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text or "(top level)"


def _show(value: Any) -> str:
    if isinstance(value, str):
        text = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    else:
        text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _problems(exc: ValidationError) -> Iterator[str]:
    for error in exc.errors(include_url=False):
        loc: tuple[str | int, ...] = tuple(error["loc"])
        value: Any = error.get("input")
        message = error["msg"]
        kind = error["type"]
        ctx = error.get("ctx") or {}
        if kind == "invalid_setting":
            loc = loc + tuple(ctx["loc"])
            value = ctx["value"]
        elif kind == "value_error" and message.startswith("Value error, "):
            message = message.removeprefix("Value error, ")
        elif kind == "extra_forbidden":
            message = "unknown key (misspelt, or in the wrong section?)"
        elif kind == "missing":
            message = "required, but not set"
            if (name := _env_name(loc)) is not None:
                message += f" (set it in the file or with {name})"
        key = next((p for p in reversed(loc) if isinstance(p, str)), "")
        line = f"{_dotted(loc)}: {message}"
        if kind != "missing" and not (kind == "invalid_setting" and value is None):
            line += f" (got {_show(_masked(key, value))})"
        env_var = _env_name(loc)
        if kind != "missing" and env_var is not None and _env_is_set(env_var):
            line += f" (from {env_var})"
        yield line


def load_settings(path: Path | None = None, **overrides: Any) -> Settings:
    """Read the configuration, or raise ConfigError saying everything that is wrong with it.

    `path` None means $EDGE_GATEWAY_CONFIG, else the default file if it exists, else no file.
    `overrides` win over everything (sections as dicts merge with the file: sim={"port": 0}).
    """
    chosen = _choose_path(path)
    if chosen is not None and not chosen.is_file():
        reason = "is not a file" if chosen.exists() else "does not exist"
        raise ConfigError(f"configuration file {chosen} {reason}", path=chosen)
    where = f"configuration file {chosen}" if chosen else "configuration (no file)"
    token = _toml_path.set(chosen)
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = list(_problems(exc))
        message = f"invalid {where}:\n" + "\n".join(f"  {p}" for p in problems)
        raise ConfigError(message, path=chosen, problems=problems) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where} is not valid TOML: {exc}", path=chosen) from None
    except UnicodeDecodeError as exc:
        line = exc.object[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"{where} is not UTF-8 text (line {line}); save it as UTF-8", path=chosen
        ) from None
    except OSError as exc:
        raise ConfigError(f"{where} cannot be read: {exc.strerror}", path=chosen) from None
    except SettingsError as exc:
        # Raised for an environment variable that should hold JSON (a list, a section) but does not.
        field = re.search(r'field "(\w+)"', str(exc))
        prefix = ENV_PREFIX + (field.group(1).upper() if field else "")
        suspects = sorted(key for key in os.environ if key.upper().startswith(prefix))
        raise ConfigError(
            f"invalid environment setting in {', '.join(suspects) or prefix + '*'}: a list or a "
            f"section must be written as JSON, e.g. {ENV_PREFIX}SIM__ALLOW='[\"10.0.0.0/24\"]' "
            f"({exc})",
            path=chosen,
        ) from None
    finally:
        _toml_path.reset(token)


# ---------------------------------------------------------------------------------------------
# Showing


_BARE_KEY_RE = re.compile(r"[A-Za-z0-9_-]+")


def _toml_key(key: str) -> str:
    return key if _BARE_KEY_RE.fullmatch(key) else _toml_string(key)


def _toml_string(text: str) -> str:
    out = ['"']
    for char in text:
        if char == '"':
            out.append('\\"')
        elif char == "\\":
            out.append("\\\\")
        elif char == "\n":
            out.append("\\n")
        elif char == "\t":
            out.append("\\t")
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04X}")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        items = (f"{_toml_key(str(k))} = {_toml_value(v)}" for k, v in value.items())
        return "{ " + ", ".join(items) + " }"
    return _toml_string(str(value))


def _is_table_array(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def _render_table(data: Mapping[str, Any], prefix: str, lines: list[str]) -> None:
    for key, value in data.items():
        if isinstance(value, dict) or _is_table_array(value):
            continue
        if value is None:
            lines.append(f"# {_toml_key(key)} is not set")
        else:
            lines.append(f"{_toml_key(key)} = {_toml_value(_masked(key, value))}")
    for key, value in data.items():
        name = f"{prefix}.{_toml_key(key)}" if prefix else _toml_key(key)
        if isinstance(value, dict):
            lines.extend(["", f"[{name}]"])
            _render_table(value, name, lines)
        elif _is_table_array(value):
            for item in value:
                lines.extend(["", f"[[{name}]]"])
                _render_table(item, name, lines)


def render_effective(settings: Settings) -> str:
    """The configuration in force, as TOML, with secrets masked ("***")."""
    lines = ["# Effective edge-gateway configuration (secrets masked)."]
    _render_table(settings.model_dump(mode="json"), "", lines)
    return "\n".join(lines) + "\n"
