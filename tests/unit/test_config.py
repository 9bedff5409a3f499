"""Settings validation: the environment is read once and checked as a whole."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from raysys.config import load_settings, warn_unknown_variables
from raysys.errors import ConfigurationError

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def clean_env(no_settings_variables: None, monkeypatch: pytest.MonkeyPatch,
              tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no stray .env


def test_defaults_use_the_embedded_redis() -> None:
    settings = load_settings()
    assert not settings.redis_configured
    assert settings.namespace == "raysys"


def test_url_overrides_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_HOST", "a.example")
    monkeypatch.setenv("RAYSYS_REDIS_URL", "redis://:pw@b.example:7000/0")
    settings = load_settings()
    assert settings.redis_endpoint() == ("b.example", 7000)
    assert "pw" not in repr(settings)


def test_cert_reqs_none_needs_insecure_dev(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_HOST", "h")
    monkeypatch.setenv("REDIS_USE_TLS", "true")
    monkeypatch.setenv("REDIS_SSL_CERT_REQS", "none")
    with pytest.raises(ConfigurationError, match="RAYSYS_INSECURE_DEV"):
        load_settings()
    monkeypatch.setenv("RAYSYS_INSECURE_DEV", "1")
    assert load_settings().redis_ssl_cert_reqs == "none"


def test_tls_files_without_tls_are_inconsistent(monkeypatch: pytest.MonkeyPatch,
                                                tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    monkeypatch.setenv("REDIS_SSL_CA_CERTS", str(ca))
    with pytest.raises(ConfigurationError, match="REDIS_USE_TLS"):
        load_settings()


def test_missing_tls_file_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_USE_TLS", "1")
    monkeypatch.setenv("REDIS_SSL_CA_CERTS", "/nonexistent/ca.pem")
    with pytest.raises(ConfigurationError, match=r"/nonexistent/ca\.pem"):
        load_settings()


def test_cert_without_key_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cert = tmp_path / "c.pem"
    cert.write_text("x")
    monkeypatch.setenv("REDIS_USE_TLS", "1")
    monkeypatch.setenv("REDIS_SSL_CERTFILE", str(cert))
    with pytest.raises(ConfigurationError, match="together"):
        load_settings()


def test_short_api_token_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAYSYS_API_TOKEN", "short")
    with pytest.raises(ConfigurationError, match="at least 32"):
        load_settings()


@pytest.mark.parametrize(
    ("name", "value", "variable"),
    [("REDIS_PORT", "99999", "REDIS_PORT"), ("RAYSYS_LEASE_TTL_S", "-1", "RAYSYS_LEASE_TTL_S"),
     ("RAYSYS_NAMESPACE", "bad ns!", "RAYSYS_NAMESPACE"), ("LOG_LEVEL", "LOUD", "LOG_LEVEL")],
)
def test_bad_values_name_the_variable(monkeypatch: pytest.MonkeyPatch, name: str, value: str,
                                      variable: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError, match=variable):
        load_settings()


def test_unknown_raysys_variable_warns_with_closest_name(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="raysys.config"):
        warnings = warn_unknown_variables({"RAYSYS_LEASE_TTL": "5", "OTHER": "x"})
    assert warnings == [
        "unknown variable RAYSYS_LEASE_TTL is ignored; did you mean RAYSYS_LEASE_TTL_S?"]
    assert "RAYSYS_LEASE_TTL_S" in caplog.text


def test_dotenv_file_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("RAYSYS_NAMESPACE=fromfile\n")
    assert load_settings().namespace == "fromfile"
