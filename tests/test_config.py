"""gateway.config: where settings come from, what is refused and how, what check-config shows."""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
import socket
import tomllib
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from pydantic import BaseModel, Field, ValidationError

from gateway import config
from gateway.config import (
    ConfigError,
    MqttSettings,
    SerialPortSettings,
    Settings,
    currency_decimals,
    load_settings,
    render_effective,
)


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No stray EDGE_GATEWAY_* variable and no /etc/edge-gateway file can leak into a test."""
    for name in list(os.environ):
        if name.upper().startswith("EDGE_GATEWAY_"):
            monkeypatch.delenv(name)
    monkeypatch.setattr(config, "DEFAULT_CONFIG_PATH", tmp_path / "absent" / "gateway.toml")


def write(tmp_path: Path, text: str, name: str = "gateway.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def refusal(path: Path | None = None) -> ConfigError:
    """What load_settings refuses the configuration (the file at `path`, the environment) with."""
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    return caught.value


# --- where settings come from -----------------------------------------------------------------


def test_defaults_apply_when_there_is_no_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGE_GATEWAY_STORE_ID", "store-042")

    settings = load_settings()

    assert settings.store_id == "store-042"
    assert settings.gateway_id == socket.gethostname()
    assert settings.data_dir == Path("/var/lib/edge-gateway")
    assert settings.database_path == Path("/var/lib/edge-gateway/gateway.db")
    assert settings.timezone is None
    assert settings.currency == "EUR"
    assert settings.central.url is None
    assert settings.central.timeout_s == 10
    assert settings.central.batch_size == 500
    assert settings.sim.enabled is True
    assert (settings.sim.host, settings.sim.port) == ("127.0.0.1", 5009)
    assert settings.sim.allow == ["127.0.0.0/8", "::1/128"]
    assert settings.sim.encoding == "cp1252"
    assert settings.sim.max_frame == 32768
    assert settings.serial.ports == []
    assert (settings.admin.host, settings.admin.port) == ("127.0.0.1", 8765)
    assert settings.coupons.reservation_ttl_s == 7200
    assert settings.offline.coupon_policy == "allow"
    assert (settings.storage.max_db_mb, settings.storage.min_free_mb) == (0, 64)
    assert (settings.log.level, settings.log.format) == ("info", "auto")


def test_store_id_is_required() -> None:
    refused = refusal()
    assert "store_id: required" in str(refused)
    assert "EDGE_GATEWAY_STORE_ID" in str(refused)


def test_a_toml_file_with_sections_is_read(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        store_id = "s1"
        gateway_id = "till-server"
        data_dir = "/srv/gw"
        timezone = "Europe/Paris"
        currency = "JPY"

        [central]
        url = "https://central.example.com/api"
        token_file = "/etc/edge-gateway/token"
        batch_size = 100

        [sim]
        port = 6000
        allow = ["10.0.0.0/24"]

        [[serial.ports]]
        device = "/dev/ttyS0"
        baudrate = 19200
        parity = "E"
        stopbits = 1.5

        [storage]
        max_db_mb = 2048
        """,
    )

    settings = load_settings(path)

    assert settings.gateway_id == "till-server"
    assert settings.database_path == Path("/srv/gw/gateway.db")
    assert settings.tzinfo() == ZoneInfo("Europe/Paris")
    assert settings.currency == "JPY"
    assert settings.central.url == "https://central.example.com/api"
    assert settings.central.token_file == Path("/etc/edge-gateway/token")
    assert settings.central.batch_size == 100
    assert settings.sim.port == 6000
    assert settings.sim.host == "127.0.0.1"
    assert settings.serial.ports[0].device == "/dev/ttyS0"
    assert settings.serial.ports[0].baudrate == 19200
    assert settings.serial.ports[0].parity == "E"
    assert settings.serial.ports[0].stopbits == 1.5
    assert settings.storage.max_db_mb == 2048


def test_the_file_named_by_edge_gateway_config_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, 'store_id = "from-env-path"\n')
    monkeypatch.setenv("EDGE_GATEWAY_CONFIG", str(path))

    assert load_settings().store_id == "from-env-path"


def test_the_default_file_is_read_when_it_exists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(config, "DEFAULT_CONFIG_PATH", write(tmp_path, 'store_id = "etc"\n'))

    assert load_settings().store_id == "etc"


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(
        tmp_path,
        """
        store_id = "from-file"
        currency = "EUR"
        [sim]
        host = "0.0.0.0"
        port = 5009
        allow = ["10.0.0.0/24"]
        """,
    )
    monkeypatch.setenv("EDGE_GATEWAY_STORE_ID", "from-env")
    monkeypatch.setenv("EDGE_GATEWAY_SIM__PORT", "5010")
    monkeypatch.setenv("EDGE_GATEWAY_SIM__ALLOW", '["192.168.1.0/24", "::1/128"]')

    settings = load_settings(path)

    assert settings.store_id == "from-env"
    assert settings.currency == "EUR"
    assert settings.sim.port == 5010
    assert settings.sim.host == "0.0.0.0"  # the rest of the file's section still applies
    assert settings.sim.allow == ["192.168.1.0/24", "::1/128"]


def test_keyword_overrides_win_over_environment_and_merge_into_sections(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, 'store_id = "s1"\n[sim]\nhost = "0.0.0.0"\nport = 5009\n')
    monkeypatch.setenv("EDGE_GATEWAY_SIM__PORT", "5010")

    settings = load_settings(path, sim={"port": 0})

    assert settings.sim.port == 0
    assert settings.sim.host == "0.0.0.0"


def test_an_empty_environment_value_unsets_an_optional_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, 'store_id = "s1"\n[central]\nurl = "https://central.example.com"\n')
    monkeypatch.setenv("EDGE_GATEWAY_CENTRAL__URL", "")

    assert load_settings(path).central.url is None


def test_a_utf8_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    path.write_bytes(b'\xef\xbb\xbfstore_id = "notepad"\n')

    assert load_settings(path).store_id == "notepad"


# --- what is refused, and how the refusal reads --------------------------------------------------


@pytest.mark.parametrize(
    ("toml", "key", "shown"),
    [
        ("[sim]\nport = 70000", "sim.port: Input should be less than or equal to 65535", "70000"),
        ('[sim]\nallow = ["10.0.0.300/24"]', "sim.allow[0]:", '"10.0.0.300/24"'),
        ('timezone = "Mars/Olympus"', "timezone:", '"Mars/Olympus"'),
        ('currency = "euro"', "currency:", '"euro"'),
        ('store_id = "has space"', "store_id:", '"has space"'),
        ('[sim]\nencoding = "klingon"', "sim.encoding:", '"klingon"'),
        ('[sim]\nencoding = "base64"', "sim.encoding:", '"base64"'),
        ('[sim]\nencoding = "utf-16"', "sim.encoding:", '"utf-16"'),
        ('[sim]\nencoding = "cp500"', "sim.encoding:", '"cp500"'),
        ("[sim]\nmax_frame = 100", "sim.max_frame:", "100"),
        ("[sim]\nread_timeout_s = 0", "sim.read_timeout_s:", "0"),
        ("[central]\nbatch_size = 501", "central.batch_size:", "501"),
        ("[central]\ntimeout_s = inf", "central.timeout_s:", "inf"),
        (
            '[central]\nurl = "ftp://central.example.com"',
            "central.url:",
            '"ftp://central.example.com"',
        ),
        ('[mqtt]\nurl = "http://broker"', "mqtt.url:", '"http://broker"'),
        ('[[serial.ports]]\ndevice = "/dev/ttyS0"\nstopbits = 3', "serial.ports[0].stopbits", "3"),
        ('[log]\nlevel = "loud"', "log.level:", '"loud"'),
    ],
)
def test_a_bad_value_names_its_dotted_key_and_shows_the_value(
    tmp_path: Path, toml: str, key: str, shown: str
) -> None:
    path = write(tmp_path, ("" if "store_id" in toml else 'store_id = "s1"\n') + toml + "\n")

    message = str(refusal(path))
    assert str(path) in message
    line = next(line for line in message.splitlines() if key in line)
    assert f"(got {shown}" in line


def test_every_bad_key_is_listed_at_once(tmp_path: Path) -> None:
    path = write(tmp_path, 'store_id = "s1"\ncurrency = "euro"\n[sim]\nport = 70000\n')

    refused = refusal(path)

    assert len(refused.problems) == 2
    assert any(p.startswith("currency:") for p in refused.problems)
    assert any(p.startswith("sim.port:") for p in refused.problems)


def test_a_bad_environment_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGE_GATEWAY_STORE_ID", "s1")
    monkeypatch.setenv("EDGE_GATEWAY_SIM__PORT", "70000")

    refused = refusal()

    assert "sim.port:" in str(refused)
    assert "(from EDGE_GATEWAY_SIM__PORT)" in str(refused)


def test_a_list_in_the_environment_that_is_not_json_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EDGE_GATEWAY_STORE_ID", "s1")
    monkeypatch.setenv("EDGE_GATEWAY_SIM__ALLOW", "10.0.0.0/24")

    assert "EDGE_GATEWAY_SIM__ALLOW" in str(refusal())


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ('stor_id = "s1"', "stor_id"),
        ("[sim]\nprot = 5010", "sim.prot"),
        ("[simm]\nport = 5010", "simm"),
        ('[[serial.ports]]\ndevice = "/dev/ttyS0"\nbaud = 9600', "serial.ports[0].baud"),
    ],
)
def test_an_unknown_key_is_named(tmp_path: Path, toml: str, key: str) -> None:
    path = write(tmp_path, 'store_id = "s1"\n' + toml + "\n")

    assert f"{key}: unknown key" in str(refusal(path))


def test_an_unknown_secret_key_does_not_show_its_value(tmp_path: Path) -> None:
    path = write(tmp_path, 'store_id = "s1"\n[mqtt]\npassword = "hunter2"\n')

    refused = refusal(path)

    assert "mqtt.password: unknown key" in str(refused)
    assert "hunter2" not in str(refused)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.toml"

    refused = refusal(missing)

    assert str(missing) in str(refused)
    assert "does not exist" in str(refused)
    assert refused.path == missing


def test_a_missing_file_named_by_edge_gateway_config_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGE_GATEWAY_CONFIG", str(tmp_path / "nowhere.toml"))

    with pytest.raises(ConfigError, match=r"nowhere\.toml"):
        load_settings()


def test_broken_toml_names_the_file_and_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, 'store_id = "s1"\n[sim\nport = 1\n')

    refused = refusal(path)

    assert str(path) in str(refused)
    assert "line 2" in str(refused)


def test_a_file_that_is_not_utf8_names_the_file_and_the_line(tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    path.write_bytes(b'store_id = "s1"\n# caf\xe9\n')

    refused = refusal(path)

    assert str(path) in str(refused)
    assert "line 2" in str(refused)


@pytest.mark.parametrize(
    "url", ["http://central.example.com", "http://10.1.2.3:8080", "http://[2001:db8::1]/"]
)
def test_plain_http_to_a_remote_central_is_refused(tmp_path: Path, url: str) -> None:
    path = write(tmp_path, f'store_id = "s1"\n[central]\nurl = "{url}"\n')

    assert "central.url:" in str(refusal(path))


def test_plain_http_to_a_remote_central_is_accepted_with_allow_insecure(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        'store_id = "s1"\n[central]\nurl = "http://central.example.com"\nallow_insecure = true\n',
    )

    assert load_settings(path).central.url == "http://central.example.com"


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080",
        "http://127.8.0.1",
        "http://localhost:8080/api",
        "http://[::1]:8080",
        "https://central.example.com",
    ],
)
def test_loopback_http_and_any_https_central_are_accepted(tmp_path: Path, url: str) -> None:
    path = write(tmp_path, f'store_id = "s1"\n[central]\nurl = "{url}"\n')

    assert load_settings(path).central.url == url


def test_allow_up_to_without_a_maximum_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, 'store_id = "s1"\n[offline]\ncoupon_policy = "allow_up_to"\n')

    assert "offline.coupon_max_amount:" in str(refusal(path))


def test_allow_up_to_with_a_maximum_is_kept_in_minor_units(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        'store_id = "s1"\n[offline]\ncoupon_policy = "allow_up_to"\ncoupon_max_amount = "10.50"\n',
    )

    settings = load_settings(path)

    assert settings.offline.coupon_max_amount == "10.50"
    assert settings.offline_coupon_max_minor == 1050


@pytest.mark.parametrize(
    ("currency", "amount"), [("EUR", '"10.005"'), ("JPY", '"10.5"'), ("EUR", "10.5")]
)
def test_a_coupon_maximum_the_currency_cannot_express_is_refused(
    tmp_path: Path, currency: str, amount: str
) -> None:
    path = write(
        tmp_path,
        f'store_id = "s1"\ncurrency = "{currency}"\n'
        f'[offline]\ncoupon_policy = "allow_up_to"\ncoupon_max_amount = {amount}\n',
    )

    with pytest.raises(ConfigError, match=r"offline\.coupon_max_amount"):
        load_settings(path)


def test_an_admin_api_beyond_localhost_needs_a_token_file(tmp_path: Path) -> None:
    path = write(tmp_path, 'store_id = "s1"\n[admin]\nhost = "0.0.0.0"\n')
    with pytest.raises(ConfigError, match=r"admin\.host"):
        load_settings(path)

    guarded = load_settings(path, admin={"token_file": "/etc/edge-gateway/admin-token"})
    assert guarded.admin.host == "0.0.0.0"


def test_the_same_serial_device_twice_is_refused(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        'store_id = "s1"\n[[serial.ports]]\ndevice = "COM1"\n[[serial.ports]]\ndevice = "COM1"\n',
    )

    with pytest.raises(ConfigError, match=r"serial\.ports\[1\]\.device"):
        load_settings(path)


# --- the settings objects ------------------------------------------------------------------------


def test_settings_are_immutable() -> None:
    settings = load_settings(store_id="s1")

    with pytest.raises(ValidationError):
        settings.store_id = "s2"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        settings.sim.port = 1  # type: ignore[misc]


def test_allowed_networks_are_ip_networks() -> None:
    settings = load_settings(store_id="s1", sim={"allow": ["10.0.0.7/24", "::1/128"]})

    networks = settings.sim.allowed_networks()

    assert networks == [ipaddress.ip_network("10.0.0.0/24"), ipaddress.ip_network("::1/128")]
    assert ipaddress.ip_address("10.0.0.99") in networks[0]


def test_tzinfo_falls_back_to_a_zone_of_the_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "America/New_York")  # the machine's zone, as the daemon sees it
    tz = load_settings(store_id="s1").tzinfo()

    assert tz == ZoneInfo("America/New_York")
    # A real zone, not the offset of the day it was read: it still follows the next DST change.
    hour = datetime.timedelta(hours=1)
    assert datetime.datetime(2024, 7, 1, 12, tzinfo=tz).utcoffset() == -4 * hour
    assert datetime.datetime(2024, 1, 15, 12, tzinfo=tz).utcoffset() == -5 * hour


@pytest.mark.parametrize(
    ("code", "decimals"), [("EUR", 2), ("JPY", 0), ("KRW", 0), ("BHD", 3), ("KWD", 3), ("USD", 2)]
)
def test_currency_decimals_follow_iso_4217(code: str, decimals: int) -> None:
    assert currency_decimals(code) == decimals


# --- check-config output -------------------------------------------------------------------------


class _MqttWithPassword(MqttSettings):
    password: str | None = None


class _SettingsWithPassword(Settings):
    mqtt: _MqttWithPassword = Field(default_factory=_MqttWithPassword)


def test_render_effective_masks_secrets_but_not_usernames_or_secret_file_paths() -> None:
    settings = _SettingsWithPassword(
        store_id="s1",
        central={"url": "https://gw:central-pass@central.example.com/api"},
        mqtt={
            "url": "mqtts://till:broker-pass@broker.example.com:8883",
            "username": "till-user",
            "password": "hunter2",
            "password_file": "/etc/edge-gateway/mqtt-password",
        },
    )

    text = render_effective(settings)
    rendered = tomllib.loads(text)

    assert "hunter2" not in text
    assert "central-pass" not in text
    assert "broker-pass" not in text
    assert rendered["mqtt"]["password"] == "***"
    assert rendered["mqtt"]["username"] == "till-user"
    assert rendered["mqtt"]["password_file"] == "/etc/edge-gateway/mqtt-password"
    assert rendered["mqtt"]["url"] == "mqtts://till:***@broker.example.com:8883"
    assert rendered["central"]["url"] == "https://gw:***@central.example.com/api"


def test_render_effective_loads_back_into_equal_settings(tmp_path: Path) -> None:
    original = load_settings(
        write(
            tmp_path,
            """
            store_id = "s1"
            timezone = "America/New_York"
            currency = "USD"
            [central]
            url = "https://central.example.com"
            token_file = "/etc/edge-gateway/token"
            timeout_s = 2.5
            [sim]
            port = 0
            allow = ["10.0.0.0/24", "::1/128"]
            encoding = "utf-8"
            [[serial.ports]]
            device = "/dev/ttyUSB0"
            stopbits = 1.5
            [[serial.ports]]
            device = "/dev/ttyUSB1"
            parity = "O"
            [mqtt]
            url = "mqtt://localhost"
            username = "till"
            [offline]
            coupon_policy = "allow_up_to"
            coupon_max_amount = "5.00"
            [log]
            level = "DEBUG"
            """,
        )
    )

    reloaded = load_settings(write(tmp_path, render_effective(original), "effective.toml"))

    assert reloaded == original


def test_render_effective_of_defaults_loads_back(tmp_path: Path) -> None:
    original = load_settings(store_id="s1")

    reloaded = load_settings(write(tmp_path, render_effective(original), "effective.toml"))

    assert reloaded == original


# --- the sample configuration and the reference ----------------------------------------------

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "packaging" / "gateway.toml"


def _dotted_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys.extend(_dotted_keys(annotation, f"{prefix}{name}."))
        else:
            keys.append(prefix + name)
    return keys


def test_the_sample_configuration_matches_the_defaults() -> None:
    assert load_settings(SAMPLE) == load_settings(store_id="CHANGE-ME")


def test_every_commented_out_key_in_the_sample_is_valid_and_every_key_is_there(
    tmp_path: Path,
) -> None:
    uncommented = re.sub(r"(?m)^# (\[\[serial\.ports\]\]|\w+ = )", r"\1", SAMPLE.read_text())
    data = tomllib.loads(uncommented)

    settings = load_settings(write(tmp_path, uncommented))

    assert settings.serial.ports[0].device == "/dev/ttyS0"
    present = {
        f"{section}.{key}" if isinstance(values, dict) else section
        for section, values in data.items()
        for key in (values if isinstance(values, dict) else [None])
    }
    assert set(_dotted_keys(Settings)) <= present | {"serial.ports"}


def test_the_reference_documents_every_key() -> None:
    reference = (ROOT / "docs" / "configuration.md").read_text()

    rows = [f"| `{key}` |" for key in _dotted_keys(Settings)]
    rows += [f"| `serial.ports[].{key}` |" for key in SerialPortSettings.model_fields]
    missing = [row for row in rows if row not in reference]
    assert missing == []
