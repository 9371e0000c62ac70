from __future__ import annotations

from pathlib import Path

import pytest

import registry
from registry.location import location_path, open_local
from registry.migrations import MIGRATIONS


def test_location_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REGISTRY_URL", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    settings = registry.RegistrySettings()
    assert location_path(None, settings) == tmp_path / "data" / "loraport" / "registry"
    monkeypatch.setenv("REGISTRY_URL", str(tmp_path / "env"))
    assert location_path(None, registry.RegistrySettings()) == tmp_path / "env"
    assert location_path(tmp_path / "arg", registry.RegistrySettings()) == tmp_path / "arg"


@pytest.mark.parametrize("url", ["s3://bucket", "ftp://host/x", "http://", "https:///path"])
def test_unknown_schemes_and_hostless_urls_are_refused(url: str) -> None:
    with pytest.raises(registry.UnsupportedLocationError):
        registry.open(url)


@pytest.mark.parametrize("url", ["http://127.0.0.1:9", "HTTPS://127.0.0.1:9/"])
def test_the_scheme_picks_the_http_client(url: str) -> None:
    from registry.http_client import HttpRegistry

    with registry.open(url) as reg:  # opening asks nothing; the first call does
        assert isinstance(reg, HttpRegistry)
        assert reg.location == url.rstrip("/")
        with pytest.raises(registry.RegistryUnavailableError, match="registry serve"):
            reg.list_adapters()


def test_open_creates_and_migrates(tmp_path: Path) -> None:
    with open_local(tmp_path / "new") as reg:
        assert (tmp_path / "new" / "registry.db").exists()
        assert reg.store.schema_version() == len(MIGRATIONS)
        assert reg.store.one("PRAGMA journal_mode") == {"journal_mode": "wal"}
        assert reg.change_token() == 0 and reg.list_adapters() == []
    (tmp_path / "file").write_text("x")
    with pytest.raises(registry.NotARegistryError, match="is a file"):
        registry.open(tmp_path / "file")


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"REGISTRY_URL": "", "XDG_DATA_HOME": "/data"}, "/data/loraport/registry"),
        ({"REGISTRY_URL": "/srv/reg", "XDG_DATA_HOME": "/data"}, "/srv/reg"),
        ({"XDG_DATA_HOME": ""}, "~/.local/share/loraport/registry"),
        ({"XDG_DATA_HOME": "data"}, "~/.local/share/loraport/registry"),  # relative: ignored
        ({"REGISTRY_URL": "", "XDG_DATA_HOME": ""}, "~/.local/share/loraport/registry"),
    ],
)
def test_empty_location_variables_count_as_unset(
    env: dict[str, str], expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An empty REGISTRY_URL (or XDG_DATA_HOME) is unset, as in the XDG spec: never the
    current directory, never an error."""
    for name in ("REGISTRY_URL", "XDG_DATA_HOME"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert location_path(None, registry.RegistrySettings()) == Path(expected).expanduser()


@pytest.mark.parametrize("given", ["", " ", "\t", " /srv/reg", "/srv/reg "])
def test_an_empty_or_padded_location_given_is_refused(given: str) -> None:
    with pytest.raises(registry.UnsupportedLocationError, match="empty or has spaces"):
        location_path(given, registry.RegistrySettings(url="/srv/reg"))


def test_a_blank_registry_url_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REGISTRY_URL", "  ")
    with pytest.raises(registry.UnsupportedLocationError, match="REGISTRY_URL='  ' is blank"):
        location_path(None, registry.RegistrySettings())
