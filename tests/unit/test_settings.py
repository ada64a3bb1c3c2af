"""pledgewatch.settings: environment parsing and errors that name the variable to fix."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from pledgewatch.http import api_config
from pledgewatch.settings import Settings, SettingsError, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    for name in list(os.environ):
        if name.upper().startswith("PLEDGEWATCH_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no stray .env file can leak in
    yield


def env(monkeypatch: pytest.MonkeyPatch, **values: str) -> None:
    for key, value in values.items():
        monkeypatch.setenv(f"PLEDGEWATCH_{key.upper()}", value)


def error_for(monkeypatch: pytest.MonkeyPatch, **values: str) -> str:
    env(monkeypatch, **values)
    with pytest.raises(SettingsError) as info:
        load_settings()
    return str(info.value)


def test_defaults_mean_embedded_services() -> None:
    s = load_settings()
    assert isinstance(s, Settings)
    assert s.environment == "development"
    assert s.database_url is None
    assert s.mqtt_url is None
    assert s.mqtt_shared_group is None
    assert s.mqtt_tenant_filter == "+"
    assert s.batch_max_messages == 2000
    assert s.max_payload_bytes == 16_384
    assert s.timescale_chunk_interval == "1 day"
    assert isinstance(s.state_dir, Path)


@pytest.mark.parametrize(
    "url", ["postgresql://pw:secret@db:5432/pledgewatch", "postgres://localhost/pw",
            "postgresql:///pw?host=/var/run/postgresql"],
)
def test_valid_database_urls(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    env(monkeypatch, database_url=url)
    assert load_settings().database_url == url


@pytest.mark.parametrize(
    "url", ["mqtt://127.0.0.1:1883", "mqtts://user:pass@broker.example:8883", "mqtt://broker",
            "tcp://localhost:1883"],
)
def test_valid_mqtt_urls(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    env(monkeypatch, mqtt_url=url)
    assert load_settings().mqtt_url == url


@pytest.mark.parametrize(
    "url", ["mysql://db/pw", "http://db", "db:5432/pw", "sqlite:///pw.db", "postgresqlx://db"]
)
def test_bad_database_url_scheme_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    message = error_for(monkeypatch, database_url=url)
    assert "PLEDGEWATCH_DATABASE_URL" in message
    assert "postgresql://" in message
    assert "PLEDGEWATCH_MQTT_URL" not in message


@pytest.mark.parametrize(
    "url", ["http://broker:1883", "ws://broker", "broker:1883", "amqp://broker", "mqtt:/broker"]
)
def test_bad_mqtt_url_names_the_variable(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    message = error_for(monkeypatch, mqtt_url=url)
    assert "PLEDGEWATCH_MQTT_URL" in message
    assert "PLEDGEWATCH_DATABASE_URL" not in message


@pytest.mark.parametrize("url", ["mqtt://h:99999", "mqtt://h:65536", "mqtt://h:-1", "mqtt://h:abc"])
def test_bad_mqtt_port(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    message = error_for(monkeypatch, mqtt_url=url)
    assert "PLEDGEWATCH_MQTT_URL" in message
    assert "port" in message


def test_mqtt_url_without_host(monkeypatch: pytest.MonkeyPatch) -> None:
    assert "PLEDGEWATCH_MQTT_URL" in error_for(monkeypatch, mqtt_url="mqtt://:1883")


def test_empty_string_url_means_embedded(monkeypatch: pytest.MonkeyPatch) -> None:
    env(monkeypatch, database_url="", mqtt_url="")
    s = load_settings()
    assert s.database_url is None
    assert s.mqtt_url is None


@pytest.mark.parametrize(
    ("name", "value"),
    [("batch_max_messages", "0"), ("batch_max_messages", "-1"),
     ("batch_max_messages", "100001"), ("batch_max_messages", "many"),
     ("batch_max_age_ms", "0"), ("batch_max_age_ms", "-50"), ("max_payload_bytes", "63"),
     ("max_payload_bytes", "1048577"), ("max_future_skew_s", "-1"), ("max_past_age_s", "59"),
     ("mqtt_keepalive_s", "4"), ("mqtt_session_expiry_s", "4294967296"),
     ("metrics_port", "65536"), ("http_port", "-1"), ("device_offline_after_s", "4")],
)
def test_out_of_range_numbers_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    message = error_for(monkeypatch, **{name: value})
    assert f"PLEDGEWATCH_{name.upper()}" in message


@pytest.mark.parametrize(
    ("name", "value"),
    [("batch_max_messages", "1"), ("batch_max_messages", "100000"), ("max_payload_bytes", "64"),
     ("max_future_skew_s", "0"), ("metrics_port", "0"), ("http_port", "65535")],
)
def test_numbers_at_their_bounds_are_accepted(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    env(monkeypatch, **{name: value})
    assert getattr(load_settings(), name) == int(value)


@pytest.mark.parametrize(
    "name", ["timescale_chunk_interval", "timescale_compress_after", "timescale_retention"]
)
@pytest.mark.parametrize(
    "value", ["forever", "1", "day", "1day", "1 fortnight", "-1 day", "1 day; DROP TABLE x",
              "1.5 days", "1234567 days", ""],
)
def test_bad_interval_strings(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    message = error_for(monkeypatch, **{name: value})
    assert f"PLEDGEWATCH_{name.upper()}" in message


@pytest.mark.parametrize("value", ["12 hours", "1 week", "30 minutes", "400 days", " 2 months "])
def test_good_interval_strings_are_normalised(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    env(monkeypatch, timescale_retention=value)
    assert load_settings().timescale_retention == value.strip()


@pytest.mark.parametrize("group", ["a/b", "in gest", "g+", "g#", "x" * 65, "$share", "ä"])
def test_bad_shared_group(monkeypatch: pytest.MonkeyPatch, group: str) -> None:
    assert "PLEDGEWATCH_MQTT_SHARED_GROUP" in error_for(monkeypatch, mqtt_shared_group=group)


@pytest.mark.parametrize("group", ["ingest", "ingest_2", "a-b", "x" * 64])
def test_good_shared_group(monkeypatch: pytest.MonkeyPatch, group: str) -> None:
    env(monkeypatch, mqtt_shared_group=group)
    assert load_settings().mqtt_shared_group == group


@pytest.mark.parametrize("value", ["acme/x", "+acme", "#", "-acme"])
def test_bad_tenant_filter(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    assert "PLEDGEWATCH_MQTT_TENANT_FILTER" in error_for(monkeypatch, mqtt_tenant_filter=value)


@pytest.mark.parametrize(
    ("name", "value"),
    [("environment", "staging"), ("mqtt_protocol", "4"), ("log_level", "TRACE")],
)
def test_bad_choices(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    assert f"PLEDGEWATCH_{name.upper()}" in error_for(monkeypatch, **{name: value})


@pytest.mark.parametrize(
    "values",
    [{}, {"database_url": "postgresql://db/pw"}, {"mqtt_url": "mqtt://broker:1883"},
     {"database_url": "", "mqtt_url": ""}],
    ids=["neither", "no-mqtt", "no-database", "empty"],
)
def test_production_refuses_embedded_services(
    monkeypatch: pytest.MonkeyPatch, values: dict[str, str]
) -> None:
    message = error_for(monkeypatch, environment="production", **values)
    assert "production" in message
    assert "PLEDGEWATCH_DATABASE_URL" in message
    assert "PLEDGEWATCH_MQTT_URL" in message


def test_production_with_both_urls_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    env(monkeypatch, environment="production", database_url="postgresql://db/pw",
        mqtt_url="mqtts://broker:8883")
    s = load_settings()
    assert s.environment == "production"
    assert (s.database_url, s.mqtt_url) == ("postgresql://db/pw", "mqtts://broker:8883")


def test_every_bad_variable_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    message = error_for(monkeypatch, database_url="mysql://x", mqtt_url="http://y",
                        batch_max_messages="0")
    for name in ("DATABASE_URL", "MQTT_URL", "BATCH_MAX_MESSAGES"):
        assert f"PLEDGEWATCH_{name}" in message


def test_overrides_take_precedence_and_are_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    env(monkeypatch, batch_max_messages="10")
    assert load_settings(batch_max_messages=20).batch_max_messages == 20
    with pytest.raises(SettingsError, match="PLEDGEWATCH_BATCH_MAX_MESSAGES"):
        load_settings(batch_max_messages=0)


def test_unrelated_and_unknown_variables_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "mysql://not-ours")
    env(monkeypatch, no_such_setting="x")
    assert load_settings().database_url is None


def test_env_names_are_case_insensitive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("pledgewatch_batch_max_messages", "7")
    assert load_settings().batch_max_messages == 7


def test_settings_error_is_not_a_pydantic_error(monkeypatch: pytest.MonkeyPatch) -> None:
    env(monkeypatch, batch_max_messages="0")
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__
    assert str(info.value).startswith("invalid configuration:")


def test_production_refuses_to_serve_the_api_without_a_token_secret(
        monkeypatch: pytest.MonkeyPatch) -> None:
    env(monkeypatch, environment="production", database_url="postgresql://db/pw",
        mqtt_url="mqtts://broker:8883")
    settings = load_settings()  # the gateway and the engine need no token secret
    with pytest.raises(SettingsError, match="PLEDGEWATCH_JWT_SECRET"):
        api_config(settings)
    env(monkeypatch, jwt_secret="j" * 32)
    assert api_config(load_settings()).jwt_secret == "j" * 32


@pytest.mark.parametrize("secret", ["short", "x" * 31])
def test_a_short_token_secret_is_refused(monkeypatch: pytest.MonkeyPatch, secret: str) -> None:
    message = error_for(monkeypatch, jwt_secret=secret)
    assert "PLEDGEWATCH_JWT_SECRET" in message and "32" in message
    assert secret not in message.replace("PLEDGEWATCH_JWT_SECRET", "")  # never echoed back


def test_the_token_secret_is_hidden_in_reprs(monkeypatch: pytest.MonkeyPatch) -> None:
    env(monkeypatch, jwt_secret="k" * 40)
    s = load_settings()
    assert s.jwt_secret is not None and s.jwt_secret.get_secret_value() == "k" * 40
    assert "k" * 40 not in repr(s)


@pytest.mark.parametrize(("name", "value"), [("token_ttl_s", "59"), ("token_ttl_s", "604801"),
                                             ("auth_cache_s", "-1"), ("auth_cache_s", "nan"),
                                             ("api_pool_size", "0")])
def test_api_settings_out_of_range_name_the_variable(monkeypatch: pytest.MonkeyPatch, name: str,
                                                     value: str) -> None:
    assert f"PLEDGEWATCH_{name.upper()}" in error_for(monkeypatch, **{name: value})
