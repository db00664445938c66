"""Settings from flags and FDEDGE_* variables; tokens can come from files (secrets), not `ps`."""

from __future__ import annotations

import pytest

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


def test_a_token_from_a_file_guards_ingest(tmp_path, linear_model):
    from starlette.testclient import TestClient

    from edge.http.app import create_app
    from tests.conftest import reading

    path = tmp_path / "token"
    path.write_text("from-a-file\n")
    settings = Settings.from_args(["--data-dir", str(tmp_path / "data"), "--model-dir", str(linear_model[0]),
                                   "--token-file", str(path)], environ={})
    with TestClient(create_app(settings)) as client:
        assert client.post("/send", json=reading(1)).status_code == 401
        ok = client.post("/send", json=reading(1), headers={"Authorization": "Bearer from-a-file"})
        assert ok.status_code == 200
