"""A bad config file gives one clear line naming the key; a good one loads typed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config import ConfigError, load_config

GOOD = """
[gateway]
id = "gw-0001"
township = "river-town"
data_dir = "data"

[mqtt]
url = "mqtts://broker.example:8883"
username = "gw-0001"
password_file = "secret.txt"

[[devices]]
kind = "hts"
address = "f0:00:00:00:00:01"
subject = "bed-3"
site = "axillary"

[[devices]]
kind = "cms50"
port = "/dev/serial/by-id/usb-Prolific-if00"
subject = "resident-A17"
"""


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "secret.txt").write_text("not-logged")
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    return path


def test_a_good_config_loads_into_typed_sections(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD))
    assert config.gateway.data_dir == tmp_path / "data"
    assert config.store.path == tmp_path / "data" / "gateway.sqlite3"
    assert config.mqtt.tls and config.mqtt.port == 8883
    assert config.mqtt.password_file == tmp_path / "secret.txt"
    assert config.topic_root == "vitals/v1/river-town/gw-0001"
    hts, cms50 = config.devices
    assert hts.address == "F0:00:00:00:00:01" and hts.device_id == "hts-f00000000001"
    assert hts.site is not None and hts.site.value == "axillary"
    assert cms50.device_id == "cms50-usb-prolific-if00"
    assert config.rules.fever.lines["axillary"] == 37.3
    assert config.rules.low_spo2.raise_at_or_below == 93
    assert config.bluetooth.watchdog_enabled and config.bluetooth.watchdog_silence_s == 300


def test_the_page_defaults_to_no_tls_and_a_password_file_beside_the_store(
    tmp_path: Path,
) -> None:
    config = load_config(write(tmp_path, GOOD))
    assert config.password_path == tmp_path / "data" / "web-password"
    assert not config.web.tls and config.web.allowed_hosts == ()
    assert config.web.metrics_token_file is None
    assert (config.web.session_idle_s, config.web.login_attempts) == (900, 5)
    web = """[web]
allowed_hosts = ["Gateway.River-Town.Example.", "pi-7"]
tls_cert = "secret.txt"
tls_key = "secret.txt"
password_file = "page/password"
metrics_token_file = "secret.txt"
"""
    config = load_config(write(tmp_path, GOOD.replace("[mqtt]", f"{web}\n[mqtt]")))
    assert config.web.allowed_hosts == ("gateway.river-town.example", "pi-7")
    assert config.web.tls and config.web.tls_key == tmp_path / "secret.txt"
    assert config.password_path == tmp_path / "page" / "password"
    assert config.web.metrics_token_file == tmp_path / "secret.txt"


def test_the_example_config_in_the_repository_is_valid() -> None:
    load_config(Path(__file__).resolve().parents[2] / "examples" / "gateway.toml")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("[gateway]", "[gateway]\ncolour = 'red'"), "gateway.colour: unknown key"),
        (('id = "gw-0001"', 'id = "gw 0001"'), "gateway.id: 'gw 0001' must be letters"),
        (('url = "mqtts://broker.example:8883"', 'url = "http://x"'), "mqtt.url: 'http://x'"),
        (('address = "f0:00:00:00:00:01"', 'address = "nearby"'), "devices[0].address"),
        (('kind = "hts"', 'kind = "scale"'), "devices[0].kind: 'scale' is not one of"),
        (('subject = "bed-3"', 'subject = "Mrs Li Hua"'), "never a name"),
        (('site = "axillary"', 'site = "armpit"'), "devices[0].site: 'armpit'"),
        (("[mqtt]", "[mqtt]\nprotocol = '4'"), "mqtt.protocol"),
        (("[mqtt]", "[rules.low_spo2]\npersist_s = 'long'\n[mqtt]"), "rules.low_spo2.persist_s"),
        (('township = "river-town"\n', ""), "gateway.township: missing"),
        (('"secret.txt"', '"absent.txt"'), "mqtt.password_file: cannot read .*absent.txt"),
        (("[mqtt]", "[bluetooth]\nadapter = 'bluez:wlan0'\n[mqtt]"), "bluetooth.adapter"),
        (
            ("[mqtt]", "[bluetooth]\nwatchdog_enabled = 'yes'\n[mqtt]"),
            "bluetooth.watchdog_enabled: must be true or false",
        ),
        (
            ("[mqtt]", "[bluetooth]\nwatchdog_silence_s = 5\n[mqtt]"),
            "bluetooth.watchdog_silence_s: must be at least 10",
        ),
        (("[mqtt]", "[mqtt]\nkeepalive_s = 65536"), "mqtt.keepalive_s: must be at most 65535"),
        (("[mqtt]", "[mqtt]\nmax_inflight = 70000"), "mqtt.max_inflight: must be at most 65535"),
        ((":8883", ":65536"), "mqtt.url: bad port in 'mqtts://broker.example:65536'"),
        (("[mqtt]", "[web]\nlisten = '0.0.0.0:65536'\n[mqtt]"), "web.listen: port out of range"),
        (("[mqtt]", "[mqtt]\nkeepalive_s = 30.0"), "mqtt.keepalive_s: must be a whole number"),
        (("[mqtt]", "[rules.low_spo2]\nraise_at_or_below = 101\n[mqtt]"), "must be at most 100"),
        (
            ("[mqtt]", "[rules.low_spo2]\nraise_at_or_below = 96\n[mqtt]"),
            "rules.low_spo2.clear_at_or_above: must be above raise_at_or_below",
        ),
        (
            ("[mqtt]", "[rules.fever.lines]\narmpit = 37.5\n[mqtt]"),
            "rules.fever.lines.armpit: 'armpit'",
        ),
        (
            ("[mqtt]", "[rules.door_opened]\n[mqtt]"),
            r"rules.door_opened: unknown key \(allowed: .*door_open, fever",
        ),
        (('kind = "hts"', 'kind = "plx"'), "devices[0].site: only hts devices have a site"),
        (("[gateway]", "[gatway]"), r"gatway: unknown key \(allowed: bluetooth, commands, devices"),
        (
            ("[mqtt]", "[web]\nallowed_hosts = ['gw.example:8080']\n[mqtt]"),
            r"web.allowed_hosts\[0\]: 'gw.example:8080' is not a host name \(no port",
        ),
        (
            ("[mqtt]", "[web]\nallowed_hosts = 'gw.example'\n[mqtt]"),
            "web.allowed_hosts: must be an array$",
        ),
        (
            ("[mqtt]", "[web]\ntls_cert = 'secret.txt'\n[mqtt]"),
            r"web.tls_key: missing \(web.tls_cert is set: both or neither\)",
        ),
        (("[mqtt]", "[web]\ntls_key = 'secret.txt'\n[mqtt]"), "web.tls_key: set web.tls_cert too"),
        (
            ("[mqtt]", "[web]\ntls_cert = 'cert.pem'\ntls_key = 'secret.txt'\n[mqtt]"),
            "web.tls_cert: cannot read .*cert.pem: No such file",
        ),
        (("[mqtt]", "[web]\nlogin_attempts = 0\n[mqtt]"), "web.login_attempts: must be at least 1"),
        (
            ("[mqtt]", "[web]\nsession_idle_s = 5\n[mqtt]"),
            "web.session_idle_s: must be at least 60",
        ),
        (
            ("[mqtt]", "[web]\nmetrics_token_file = 'token'\n[mqtt]"),
            "web.metrics_token_file: cannot read .*token",
        ),
    ],
)
def test_a_bad_config_names_the_key_and_the_problem(
    tmp_path: Path, change: tuple[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message.replace("[0]", r"\[0\]")):
        load_config(write(tmp_path, GOOD.replace(*change, 1)))


@pytest.mark.parametrize(
    ("table", "setting"),
    [
        ("mqtt", "status_interval_s = nan"),
        ("mqtt", "reconnect_max_s = inf"),
        ("store", "max_mb = inf"),
        ("store", "sync_interval_s = nan"),
        ("bluetooth", "watchdog_silence_s = +inf"),
        ("rules.fever", "high_fever_c = nan"),
        ("rules.fever.lines", "oral = inf"),
        ("rules.low_spo2", "persist_s = -inf"),
    ],
)
def test_nan_and_infinity_are_refused_everywhere(tmp_path: Path, table: str, setting: str) -> None:
    if table == "mqtt":  # GOOD has an [mqtt] table already
        text = GOOD.replace("[mqtt]\n", f"[mqtt]\n{setting}\n")
    else:
        text = f"{GOOD}\n[{table}]\n{setting}\n"
    key = f"{table}.{setting.split(' = ')[0]}"
    with pytest.raises(ConfigError, match=rf"^{key}: must be a finite number"):
        load_config(write(tmp_path, text))


def test_check_config_names_the_key_of_an_invalid_value_in_one_line(tmp_path: Path) -> None:
    bad = write(tmp_path, GOOD.replace("[mqtt]", "[mqtt]\nkeepalive_s = nan", 1))
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "check-config", str(bad)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr == "config error: mqtt.keepalive_s: must be a whole number\n"


def test_check_config_prints_one_line_and_no_traceback(tmp_path: Path) -> None:
    bad = write(tmp_path, "[gateway\nid=")
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "check-config", str(bad)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "not valid TOML" in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_check_config_accepts_a_good_file(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "check-config", str(write(tmp_path, GOOD))],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok: gateway gw-0001, 2 device(s)")


def test_a_missing_file_is_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "check-config", str(tmp_path / "nope.toml")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "file not found" in result.stderr


DOOR = """
[gateway]
id = "gw-1"
township = "t"
data_dir = "data"

[[devices]]
kind = "bthome"
address = "54:48:E6:8F:80:A5"
subject = "room-12"
key = "231d39c1d7cc1ab1aee224cd096db932"

[[devices]]
kind = "mibeacon"
address = "E4:AA:EC:81:21:AE"
subject = "room-12"
key = "017e52d2684779298709b117c0a75a7b"
"""


def test_door_sensors_take_their_key_and_keep_it_out_of_repr(tmp_path: Path) -> None:
    bthome, mibeacon = load_config(write(tmp_path, DOOR)).devices
    assert bthome.key == bytes.fromhex("231d39c1d7cc1ab1aee224cd096db932")
    assert bthome.device_id == "bthome-5448e68f80a5"
    assert "231d39" not in repr(bthome) and "017e52" not in repr(mibeacon)


def test_a_key_given_to_a_device_without_one_is_refused_without_showing_it(
    tmp_path: Path,
) -> None:
    text = DOOR.replace('kind = "bthome"', 'kind = "plx"')
    with pytest.raises(ConfigError) as refused:
        load_config(write(tmp_path, text))
    assert str(refused.value) == "devices[0].key: only bthome and mibeacon devices have a key"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (('key = "231d39c1d7cc1ab1aee224cd096db932"', 'key = "abc"'), r"devices\[0\].key: must be"),
        (
            ('key = "017e52d2684779298709b117c0a75a7b"\n', ""),
            r"devices\[1\].key: a mibeacon needs its 32-hex-digit key",
        ),
    ],
)
def test_a_bad_door_sensor_key_is_one_clear_line(
    tmp_path: Path, change: tuple[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, DOOR.replace(*change)))


NOISE_KEY = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
PROXY = f"""
[[bluetooth.proxies]]
name = "east"
host = "192.168.1.40"
noise_key = "{NOISE_KEY}"
"""


def test_proxies_load_with_their_key_kept_out_of_repr(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD + "[bluetooth]\nadapter = 'none'\n" + PROXY))
    (proxy,) = config.bluetooth.proxies
    assert (proxy.name, proxy.host, proxy.port, proxy.noise_key) == (
        "east",
        "192.168.1.40",
        6053,
        NOISE_KEY,
    )
    assert NOISE_KEY not in repr(config)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[bluetooth]\nadapter = 'none'\n", r"bluetooth: adapter 'none' needs \[\[bluetooth"),
        (PROXY.replace(NOISE_KEY, "c2hvcnQ="), r"noise_key: is 5 bytes, not 32"),
        (PROXY.replace(NOISE_KEY, NOISE_KEY[:-2] + "!!"), r"noise_key: is not base64"),
        (PROXY.replace('"east"', '"local"'), r"name: 'local' names the gateway's own adapter"),
        (PROXY + PROXY, r"bluetooth.proxies\[1\].name: two proxies have this name"),
        (PROXY.replace("192.168.1.40", "proxy east"), r"host: 'proxy east' is neither an IP"),
        (PROXY + "port = 70000\n", r"port: must be at most 65535"),
        ("[bluetooth]\nswitch_margin_db = -1\n", r"bluetooth.switch_margin_db: must be at least 0"),
    ],
)
def test_a_bad_proxy_is_one_line_that_never_shows_a_key(
    tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as refused:
        load_config(write(tmp_path, GOOD + text))
    assert NOISE_KEY not in str(refused.value) and "c2hvcnQ=" not in str(refused.value)
