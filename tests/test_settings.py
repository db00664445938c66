"""Settings from flags and FDEDGE_* variables; tokens can come from files (secrets), not `ps`."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest

from edge.plant.broker import BrokerURL
from edge.settings import Settings


def test_token_files_from_flags_and_environment(tmp_path):
    ingest, read = tmp_path / "ingest", tmp_path / "read"
    ingest.write_text("s3cret-ingest\n")
    read.write_text("  s3cret-read  \n")
    from_flags = Settings.from_args(["--token-file", str(ingest), "--read-token-file", str(read)], environ={})
    assert (from_flags.token, from_flags.read_token) == ("s3cret-ingest", "s3cret-read")
    from_env = Settings.from_args([], environ={"FDEDGE_TOKEN_FILE": str(ingest)})
    assert from_env.token == "s3cret-ingest" and from_env.read_token is None


@pytest.mark.parametrize("content, says", [
    (None, "cannot read"),
    ("", "is empty"),
    ("\n \n", "is empty"),
    ("two words\n", "one token on one line"),
    ("a\nb\n", "one token on one line"),
])
def test_a_bad_token_file_stops_start_up_with_a_reason(tmp_path, capsys, content, says):
    path = tmp_path / "token"
    if content is not None:
        path.write_text(content)
    with pytest.raises(SystemExit) as exit_:
        Settings.from_args(["--token-file", str(path)], environ={})
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "token-file" in err and says in err


def test_the_admin_token_from_a_file_or_the_environment(tmp_path, capsys):
    path = tmp_path / "admin"
    path.write_text("s3cret-admin\n")
    assert Settings.from_args(["--admin-token-file", str(path)], environ={}).admin_token == "s3cret-admin"
    assert Settings.from_args([], environ={"FDEDGE_ADMIN_TOKEN_FILE": str(path)}).admin_token == "s3cret-admin"
    assert Settings.from_args([], environ={"FDEDGE_ADMIN_TOKEN": "env-admin"}).admin_token == "env-admin"
    assert Settings.from_args([], environ={}).admin_token is None
    with pytest.raises(SystemExit):
        Settings.from_args(["--admin-token-file", str(path), "--admin-token", "y"], environ={})
    assert "not both" in capsys.readouterr().err


def test_a_token_and_its_file_together_are_refused(tmp_path, capsys):
    path = tmp_path / "token"
    path.write_text("x")
    with pytest.raises(SystemExit):
        Settings.from_args(["--token-file", str(path)], environ={"FDEDGE_TOKEN": "y"})
    assert "not both" in capsys.readouterr().err


def test_allowed_hosts_from_the_environment_and_an_empty_list_refused(capsys):
    settings = Settings.from_args([], environ={"FDEDGE_ALLOWED_HOSTS": "fdedge.plant.local, *.plant.local"})
    assert settings.allowed_hosts == "fdedge.plant.local, *.plant.local"
    assert Settings.from_args([], environ={"FDEDGE_ALLOWED_HOSTS": ""}).allowed_hosts is None  # unset
    with pytest.raises(SystemExit):
        Settings.from_args(["--allowed-hosts", " , "], environ={})
    assert "lists no names" in capsys.readouterr().err


def test_help_shows_real_defaults_and_the_variables(capsys):
    with pytest.raises(SystemExit):
        Settings.from_args(["--help"], environ={})
    out = capsys.readouterr().out
    assert "(default: 5000)" in out and "FDEDGE_TOKEN_FILE" in out
    assert "default: None" not in out


def test_a_token_from_a_file_guards_ingest(tmp_path, linear_model, make_client):
    from tests.harness import reading

    path = tmp_path / "token"
    path.write_text("from-a-file\n")
    settings = Settings.from_args(["--data-dir", str(tmp_path / "data"), "--model-dir", str(linear_model[0]),
                                   "--token-file", str(path)], environ={})
    with make_client(settings) as client:
        assert client.post("/send", json=reading(1)).status_code == 401
        ok = client.post("/send", json=reading(1), headers={"Authorization": "Bearer from-a-file"})
        assert ok.status_code == 200


# One valid text per setting, as an operator would write it, and what it must become.
EVERY_SETTING = {
    "host": ("127.0.0.1", "127.0.0.1"),
    "port": ("5050", 5050),
    "data_dir": ("/var/lib/fdedge", Path("/var/lib/fdedge")),
    "db": ("/var/lib/fdedge/plant.db", Path("/var/lib/fdedge/plant.db")),
    "model_dir": ("models/mine", Path("models/mine")),
    "web_dir": ("/opt/fdedge/web", Path("/opt/fdedge/web")),
    "token": ("ingest-secret", "ingest-secret"),
    "read_token": ("read-secret", "read-secret"),
    "token_file": None,  # read by its own test above: the value becomes `token`
    "read_token_file": None,
    "admin_token": ("admin-secret", "admin-secret"),
    "admin_token_file": None,  # read by test_the_admin_token_from_a_file_or_the_environment
    "allowed_hosts": ("fdedge.plant.local, *.plant.local", "fdedge.plant.local, *.plant.local"),
    "max_body_bytes": ("1048576", 1_048_576),
    "max_batch_rows": ("500", 500),
    "warning_threshold": ("25.5", 25.5),
    "alarm_threshold": ("70", 70.0),
    "alarm_rules": ("/etc/fdedge/alarms.json", Path("/etc/fdedge/alarms.json")),
    "clock_skew": ("60", 60.0),
    "stale_after": ("120", 120.0),
    "drift_interval": ("30", 30.0),
    "drift_window": ("600", 600),
    "send_timeout": ("5", 5.0),
    "head_timeout": ("3", 3.0),
    "max_connections": ("200", 200),
    "max_machines": ("50", 50),
    "read_threads": ("4", 4),
    "allowed_origins": ("https://scada.plant.local, http://10.0.0.9:8080", frozenset({"https://scada.plant.local:443", "http://10.0.0.9:8080"})),
    "retention_days": ("90", 90.0),
    "retention_rows": ("1000000", 1_000_000),
    "max_db_mb": ("512", 512.0),
    "retention_interval": ("30", 30.0),
    "card_size_gb": ("32", 32.0),
    "card_pe_cycles": ("3000", 3000),
    "sync": ("normal", "normal"),
    "uplink_url": ("mqtt://edge:secret@central.plant.local:1884", BrokerURL("mqtt", "central.plant.local", 1884,
                                                                           "edge", "secret")),
    "uplink_ca": ("/etc/fdedge/ca.pem", Path("/etc/fdedge/ca.pem")),
    "uplink_cert": ("/etc/fdedge/edge.pem", Path("/etc/fdedge/edge.pem")),
    "uplink_key": ("/etc/fdedge/edge.key", Path("/etc/fdedge/edge.key")),
    "uplink_topic_prefix": ("acme/berlin/line1", "acme/berlin/line1"),
    "appliance_id": ("edge-07", "edge-07"),
    "uplink_backlog_rows": ("50000", 50_000),
    "threads": ("2", 2),
    "sse_buffer": ("1024", 1024),
    "sse_replay_max": ("500", 500),
    "socketio": ("on", True),
    "init_db": ("yes", True),
    "log_level": ("warning", "warning"),
    "access_log": ("on", True),
    "mqtt_url": ("mqtt://edge:pw@broker.plant.local:1884", BrokerURL("mqtt", "broker.plant.local", 1884, "edge", "pw")),
    "mqtt_ca": ("/etc/fdedge/ca.pem", Path("/etc/fdedge/ca.pem")),
    "mqtt_cert": ("/etc/fdedge/edge.pem", Path("/etc/fdedge/edge.pem")),
    "mqtt_key": ("/etc/fdedge/edge.key", Path("/etc/fdedge/edge.key")),
    "mqtt_ingest_topic": ("plant/+/+/reading", "plant/+/+/reading"),
    "mqtt_machine_level": ("2", 2),
    "mqtt_error_topic": ("plant/errors", "plant/errors"),
    "mqtt_client_id": ("line1-edge", "line1-edge"),
    "mqtt_qos": ("0", 0),
    "modbus_port": ("5020", 5020),
    "modbus_host": ("127.0.0.1", "127.0.0.1"),
    "modbus_machines": (" press-1, lathe ,press-2", ("press-1", "lathe", "press-2")),
    "machine_metrics": ("on", True),
}


def test_every_setting_is_parsed_from_its_flag_and_its_variable():
    assert set(EVERY_SETTING) == {f.name for f in fields(Settings)}, "a new setting needs a line here"
    for name, case in EVERY_SETTING.items():
        if case is None:
            continue
        text, expected = case
        from_env = Settings.from_args([], environ={"FDEDGE_" + name.upper(): text})
        assert getattr(from_env, name) == expected, name
        option = "--" + name.replace("_", "-")
        argv = [option] if expected is True else [option, text]
        from_flag = Settings.from_args(argv, environ={})
        assert getattr(from_flag, name) == expected, name


@pytest.mark.parametrize("name, text", [
    ("port", "fifty"), ("max_batch_rows", "1.5"), ("warning_threshold", "high"), ("init_db", "perhaps"),
    ("sync", "sometimes"), ("mqtt_url", "http://broker"), ("mqtt_ingest_topic", "plant/#/reading"),
    ("mqtt_error_topic", "errors/+"),
])
def test_a_bad_value_names_its_setting(capsys, name, text):
    with pytest.raises(SystemExit) as exit_:
        Settings.from_args([], environ={"FDEDGE_" + name.upper(): text})
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert name.replace("_", "-") in err and text in err
