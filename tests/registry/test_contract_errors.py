"""The error table crosses the wire once each way: every error class the registry raises
comes back from a real service (an app on a real uvicorn server) as the same class with the
same message, and the CLI exits with the same code as on a directory. Callers are who their
token says on the server, whatever the client claims."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

import registry
from registry import errors as e
from registry.cli import main
from registry.http_client import HttpRegistry
from registry.local import LocalRegistry
from registry.service.tokens import hash_token, load_tokens
from registry.settings import RegistrySettings
from tests.registry.conftest import RECORDS, reopen
from tests.support.mounted_service import MountedServer
from tests.support.synthetic import write_base

#: Every class a registry raises (the root is never raised bare).
RAISED = [cls for cls in e.error_classes() if cls is not e.RegistryError]


@pytest.fixture(params=RECORDS)
def records(request: pytest.FixtureRequest) -> str:
    """Every test here runs with its records in SQLite and in PostgreSQL."""
    return str(request.param)


def _instance(cls: type[e.RegistryError], message: str) -> e.RegistryError:
    if cls is e.InvalidAdapterError:
        return e.InvalidAdapterError(e.AdapterProblem.RANK_TOO_HIGH, message)
    return cls(message)


@pytest.fixture
def served(
    local_reg: LocalRegistry, settings: RegistrySettings, service: MountedServer
) -> Iterator[str]:
    """An open service over ``local_reg``: its base URL."""
    with service.serve(local_reg, settings) as url:
        yield url


@pytest.mark.parametrize("cls", RAISED, ids=lambda c: c.__name__)
def test_every_error_class_comes_back_as_itself(
    cls: type[e.RegistryError],
    local_reg: LocalRegistry,
    settings: RegistrySettings,
    served: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    message = f"{cls.__name__}: what went wrong, and what to do (ünïcode kept)"

    def refuse(ref: str) -> Any:
        raise _instance(cls, message)

    monkeypatch.setattr(local_reg, "resolve", refuse)  # the service's resolve raises it
    with HttpRegistry(served, settings) as client, pytest.raises(cls) as caught:
        client.resolve("support")
    assert type(caught.value) is cls and str(caught.value) == message
    if cls is e.InvalidAdapterError:
        assert caught.value.reason == e.AdapterProblem.RANK_TOO_HIGH  # type: ignore[attr-defined]

    status = httpx.get(f"{served}/v1/resolve", params={"ref": "support"})
    assert status.status_code == cls.http_status
    assert status.json()["error"]["code"] == cls.code

    result = CliRunner().invoke(main, ["show", "support", "--registry", served])
    assert result.exit_code == cls.exit_code, result.output
    assert message in result.output


#: Errors provoked for real, the same call on a directory and through the service.
PROVOKED: dict[str, tuple[type[e.RegistryError], Callable[[registry.Registry], object]]] = {
    "no such ref": (e.RefNotFoundError, lambda r: r.resolve("nosuch")),
    "bad ref": (e.InvalidRefError, lambda r: r.resolve("Bad Name")),
    "name taken": (e.NameConflictError, lambda r: r.add_dataset(__file__, name="tiny-base")),
    "no such alias": (e.RefNotFoundError, lambda r: r.remove_alias("support", "staging")),
    "in use": (e.InUseError, lambda r: r.remove("tiny-base")),
    "rollout steps": (e.InvalidRolloutError, lambda r: r.start_rollout("support", 1, steps=[])),
    "not quarantined": (e.NotQuarantinedError, lambda r: r.lift_quarantine("support@1")),
    "lease": (e.RefNotFoundError, lambda r: r.claim_rollout("support", 9, "me", ttl_s=5)),
}


@pytest.mark.parametrize("case", sorted(PROVOKED))
def test_provoked_errors_match_the_directory(
    case: str,
    local_reg: LocalRegistry,
    settings: RegistrySettings,
    served: str,
    make_adapter: Callable[..., Path],
) -> None:
    cls, call = PROVOKED[case]
    local_reg.push_adapter(make_adapter("support"), dataset="support-data")
    with pytest.raises(e.RegistryError) as on_directory:
        call(local_reg)
    with HttpRegistry(served, settings) as client, pytest.raises(e.RegistryError) as over_http:
        call(client)
    assert type(on_directory.value) is type(over_http.value) is cls
    assert str(over_http.value) == str(on_directory.value)


@pytest.fixture
def tokens_file(tmp_path: Path) -> Path:
    path = tmp_path / "tokens.json"
    entries = [
        {"name": "ci-bot", "scope": "write", "sha256": hash_token("s3cret-write")},
        {"name": "dashboards", "scope": "read", "sha256": hash_token("s3cret-read")},
    ]
    path.write_text(json.dumps(entries))
    return path


@pytest.fixture
def guarded(
    local_reg: LocalRegistry, settings: RegistrySettings, service: MountedServer, tokens_file: Path
) -> Iterator[str]:
    """A service that needs a token (from a tokens file): its base URL."""
    with service.serve(local_reg, settings, load_tokens(tokens_file)) as url:
        yield url


def _client(url: str, token: str | None, user: str = "mallory") -> HttpRegistry:
    return HttpRegistry(url, RegistrySettings(user=user, token=token))


def test_who_is_the_tokens_name_not_the_clients_claim(
    guarded: str, make_adapter: Callable[..., Path]
) -> None:
    with _client(guarded, "s3cret-write") as reg:
        reg.push_adapter(make_adapter("support"), dataset="support-data", who="mallory")
        reg.set_alias("support", "staging", 1, who="the-ceo")
        reg.quarantine("support@1", reason="looks odd")
        recorded = {(ev.action, ev.who) for ev in reg.events("support")}
        assert {who for _, who in recorded} == {"ci-bot"}, recorded
        assert reg.adapter("support@1").created_by == "ci-bot"
    result = CliRunner().invoke(
        main,
        ["alias", "set", "support", "canary", "1", "--who", "mallory", "--registry", guarded],
        env={"REGISTRY_TOKEN": "s3cret-write"},
    )
    assert result.exit_code == 0, result.output
    with _client(guarded, "s3cret-read") as reader:
        assert reader.events("support")[-1].who == "ci-bot"


@pytest.mark.parametrize(
    ("token", "cls"),
    [
        (None, e.UnauthorizedError),
        ("wrong", e.UnauthorizedError),
        ("s3cret-read", e.ForbiddenError),
    ],
    ids=["none", "wrong", "read-scope"],
)
def test_a_write_without_a_write_token_is_refused_and_writes_nothing(
    guarded: str, token: str | None, cls: type[e.RegistryError], make_adapter: Callable[..., Path]
) -> None:
    before = _client(guarded, "s3cret-read").change_token()
    with _client(guarded, token) as reg, pytest.raises(cls):
        reg.set_alias("support", "staging", 1)
    with _client(guarded, token) as reg, pytest.raises(cls):
        reg.push_adapter(make_adapter("support"), dataset="support-data")
    env = {"REGISTRY_TOKEN": token} if token else {"REGISTRY_TOKEN": ""}
    result = CliRunner().invoke(
        main, ["alias", "set", "support", "staging", "1", "--registry", guarded], env=env
    )
    assert result.exit_code == cls.exit_code, result.output
    assert _client(guarded, "s3cret-read").change_token() == before


def test_reads_need_a_token_too(guarded: str) -> None:
    with _client(guarded, None) as reg, pytest.raises(e.UnauthorizedError):
        reg.list_bases()
    with _client(guarded, "s3cret-read") as reg:
        assert [b.name for b in reg.list_bases()] == ["tiny-base"]


def test_a_body_over_the_limit_is_request_too_large(
    local_reg: LocalRegistry, service: MountedServer
) -> None:
    tight = RegistrySettings(user="tester", serve_max_body_bytes=1024)
    with service.serve(local_reg, tight) as url, _client(url, None) as reg:
        token = reg.change_token()
        with pytest.raises(e.RequestTooLargeError, match="over the limit of 1024"):
            reg.log_variant_refused("tiny-base-fp8", {"detail": "x" * 4096})
        assert reg.change_token() == token


def test_a_read_only_registry_refuses_writes_as_read_only(
    local_reg: LocalRegistry,
    reg_path: Path,
    service: MountedServer,
    settings: RegistrySettings,
    make_adapter: Callable[..., Path],
) -> None:
    local_reg.push_adapter(make_adapter("support"), dataset="support-data")
    local_reg.close()
    with (
        reopen(local_reg, settings, read_only=True) as ro,
        service.serve(ro, settings) as url,
        _client(url, None) as reg,
    ):
        assert reg.read_only
        with pytest.raises(e.ReadOnlyRegistryError) as caught:
            reg.set_alias("support", "staging", 1)
        with pytest.raises(e.ReadOnlyRegistryError) as on_directory:
            ro.set_alias("support", "staging", 1)
        assert str(caught.value) == str(on_directory.value)


def test_a_request_the_service_cannot_read_is_a_bad_request(served: str) -> None:
    for answer in (
        httpx.post(f"{served}/v1/set_alias", content=b"{not json"),
        httpx.post(f"{served}/v1/set_alias", json={"name": "support", "alias": "x"}),
        httpx.post(f"{served}/v1/no_such_op", json={}),
        httpx.get(f"{served}/v1/resolve", params={"ref": "support", "extra": "1"}),
    ):
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"]["code"] == e.BadRequestError.code


def test_a_service_that_is_not_there_is_unavailable(settings: RegistrySettings) -> None:
    from server.supervisor import free_port

    url = f"http://127.0.0.1:{free_port()}"
    with HttpRegistry(url, settings) as reg, pytest.raises(e.RegistryUnavailableError):
        reg.list_bases()
    result = CliRunner().invoke(main, ["ls", "--registry", url])
    assert result.exit_code == e.RegistryUnavailableError.exit_code, result.output


def test_the_servers_limits_refuse_as_a_directory_with_them_does(
    local_reg: LocalRegistry,
    reg_path: Path,
    service: MountedServer,
    make_adapter: Callable[..., Path],
    tmp_path: Path,
) -> None:
    """The server's REGISTRY_MAX_FILE_BYTES and REGISTRY_MAX_LORA_RANK hold for a client
    with its own (default) settings, refused with the directory's class and message."""
    tight = RegistrySettings(user="tester", max_file_bytes=1000, max_lora_rank=2)
    big_data = tmp_path / "big.jsonl"
    big_data.write_text('{"prompt": "hi", "completion": "hello"}\n' * 100)
    other_base = write_base(tmp_path / "other-base", random=True)
    adapter = make_adapter()
    calls: dict[str, Callable[[registry.Registry], object]] = {
        "base": lambda r: r.add_base(other_base, name="other-base"),
        "adapter": lambda r: r.push_adapter(adapter, allow_unknown_dataset=True),
        "dataset": lambda r: r.add_dataset(big_data, name="big"),
    }
    with (
        reopen(local_reg, tight) as directory,
        service.serve(directory, tight) as url,
        _client(url, None) as client,
    ):
        for what, call in calls.items():
            with pytest.raises(e.RegistryError) as on_directory:
                call(directory)
            with pytest.raises(e.RegistryError) as over_http:
                call(client)
            assert type(over_http.value) is type(on_directory.value), what
            assert str(over_http.value) == str(on_directory.value), what
            assert getattr(over_http.value, "reason", None) == getattr(
                on_directory.value, "reason", None
            )
        roomy = RegistrySettings(user="tester", max_file_bytes=10**6, max_lora_rank=2)
    with (
        reopen(local_reg, roomy) as directory,
        service.serve(directory, roomy) as url,
        _client(url, None) as client,
    ):
        rank4, rank2, empty = make_adapter(r=4), make_adapter(r=2), tmp_path / "empty.jsonl"
        empty.write_text("")
        with pytest.raises(e.InvalidAdapterError, match="serving limit 2") as on_directory:
            directory.push_adapter(rank4, allow_unknown_dataset=True)
        with pytest.raises(e.InvalidAdapterError, match="serving limit 2") as over_http:
            client.push_adapter(rank4, allow_unknown_dataset=True)
        assert str(over_http.value) == str(on_directory.value)
        with pytest.raises(e.InvalidDatasetError, match="non-empty") as on_directory:
            directory.push_adapter(rank2, dataset=str(empty))
        with pytest.raises(e.InvalidDatasetError, match="non-empty") as over_http:
            client.push_adapter(rank2, dataset=str(empty))
        assert str(over_http.value) == str(on_directory.value)


def test_a_server_bug_is_a_registry_error_not_a_client_mistake(
    local_reg: LocalRegistry, service: MountedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 500 in the envelope (a bug on the server) comes back as ServiceFailedError, exit
    45, pointing at the server's log: not as a bad request or "not a registry"."""

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(local_reg, "list_adapters", broken)
    with (
        service.serve(local_reg, RegistrySettings(user="t")) as url,
        _client(url, None) as reg,
        pytest.raises(e.ServiceFailedError) as raised,
    ):
        reg.list_adapters()
    assert raised.value.exit_code == 45
    assert "its log says why" in str(raised.value) and "secret" not in str(raised.value)
