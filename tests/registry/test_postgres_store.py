"""Records on a real PostgreSQL, with several writers: two `registry serve` processes over
one database, two rollout controllers, the database stopped in the middle of a push, and
the change token seen across servers.

The two servers share blobs in one directory (what `registry serve` can take today; a
shared volume in production); the library form over PostgreSQL + SeaweedFS runs the
contract suite (``reg_kind`` = postgresql in test_store.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

import registry
from registry.errors import DatabaseUnavailableError, LeaseHeldError
from registry.http_client import HttpRegistry
from registry.local import LocalRegistry
from registry.server_location import open_store
from server.supervisor import free_port
from tests.support.postgres import Postgres, postgres
from tests.support.registry_service import registry_service

REGISTRY = str(Path(sys.executable).with_name("registry"))


@pytest.fixture
def pg_dir_reg(
    postgres_server: Postgres,
    tmp_path: Path,
    settings: registry.RegistrySettings,
    base_dir: Path,
    dataset_file: Path,
) -> Iterator[LocalRegistry]:
    """PostgreSQL records, blobs in ``tmp_path/blobs-home``, holding the base and dataset."""
    url = postgres_server.new_database()
    with open_store(url, str(tmp_path / "blobs-home"), settings=settings, create=True) as reg:
        reg.add_base(base_dir, name="tiny-base")
        reg.add_dataset(dataset_file, name="support-data")
        yield reg


def test_eight_pushes_through_two_servers_take_versions_1_to_8_once(
    pg_dir_reg: LocalRegistry,
    tmp_path: Path,
    settings: registry.RegistrySettings,
    make_adapter: Callable[..., Path],
) -> None:
    paths = [make_adapter(seed=seed) for seed in range(8)]
    url = pg_dir_reg.location
    with (
        registry_service(url, tmp_path / "a.log") as a,
        registry_service(url, tmp_path / "b.log") as b,
    ):
        clients = [HttpRegistry(a.url, settings), HttpRegistry(b.url, settings)]
        start = threading.Barrier(8)

        def push(i: int) -> int:
            start.wait()
            result = clients[i % 2].push_adapter(paths[i], name="support", dataset="support-data")
            assert result.created
            return result.adapter.version

        with ThreadPoolExecutor(8) as pool:
            versions = sorted(pool.map(push, range(8)))
        for client in clients:
            client.close()
    assert versions == list(range(1, 9))
    listed = pg_dir_reg.list_adapters("support")
    assert [v.version for v in listed] == list(range(1, 9))
    assert len({v.digest for v in listed}) == 8
    pushes = [e for e in pg_dir_reg.events("support") if e.action == "push"]
    assert sorted(e.version or 0 for e in pushes) == list(range(1, 9))
    assert pg_dir_reg.verify().ok


def test_two_controllers_race_for_one_lease_and_one_wins(
    pg_dir_reg: LocalRegistry,
    settings: registry.RegistrySettings,
    make_adapter: Callable[..., Path],
) -> None:
    pg_dir_reg.push_adapter(make_adapter(), dataset="support-data")
    pg_dir_reg.push_adapter(make_adapter(seed=1), dataset="support-data")
    rollout = pg_dir_reg.start_rollout("support", 2, steps=[10, 50])
    others = [open_store(pg_dir_reg.location, settings=settings) for _ in range(2)]
    start = threading.Barrier(2)

    def claim(i: int) -> str:
        start.wait()
        try:
            others[i].claim_rollout("support", rollout.id, f"controller-{i}", ttl_s=30)
        except LeaseHeldError:
            return "waits"
        return "wins"

    with ThreadPoolExecutor(2) as pool:
        outcomes = sorted(pool.map(claim, range(2)))
    holder = pg_dir_reg.rollout("support")
    for other in others:
        other.close()
    assert outcomes == ["waits", "wins"]
    assert holder is not None and holder.holder in ("controller-0", "controller-1")
    assert holder.lease_until is not None and holder.lease_until > pg_dir_reg.clock() + 20


def test_a_push_through_one_server_is_seen_through_the_other_within_a_second(
    pg_dir_reg: LocalRegistry,
    tmp_path: Path,
    settings: registry.RegistrySettings,
    make_adapter: Callable[..., Path],
) -> None:
    url = pg_dir_reg.location
    with (
        registry_service(url, tmp_path / "a.log") as a,
        registry_service(url, tmp_path / "b.log") as b,
        HttpRegistry(a.url, settings) as on_a,
        HttpRegistry(b.url, settings) as on_b,
    ):
        since = on_a.change_token()
        seen: list[tuple[int, float]] = []

        def watch() -> None:
            token = on_a.wait_for_change(since, timeout_s=10)
            seen.append((token, time.monotonic()))

        watcher = threading.Thread(target=watch)
        watcher.start()
        time.sleep(0.3)  # the watch is waiting on server A
        on_b.push_adapter(make_adapter(), dataset="support-data")
        pushed = time.monotonic()
        watcher.join(15)
        assert seen, "server A's watch never saw the push made through server B"
        token, at = seen[0]
        assert token > since and token == on_b.change_token()
        assert at - pushed < 1.0, f"seen {at - pushed:.2f} s after the push"
        assert on_a.resolve("support").version == 1


@pytest.fixture
def private_postgres() -> Iterator[Postgres]:
    """A cluster of this test's own (it is stopped and started again)."""
    with postgres() as server:
        yield server


def test_postgres_stopped_mid_push_is_a_clear_error_and_nothing_half_visible(
    private_postgres: Postgres,
    tmp_path: Path,
    settings: registry.RegistrySettings,
    base_dir: Path,
    dataset_file: Path,
    make_adapter: Callable[..., Path],
) -> None:
    pg = private_postgres
    url = pg.new_database()
    blobs = str(tmp_path / "blobs-home")
    with open_store(url, blobs, settings=settings, create=True) as setup:
        setup.add_base(base_dir, name="tiny-base")
        setup.add_dataset(dataset_file, name="support-data")
        setup.push_adapter(make_adapter(), dataset="support-data")

    stopped: list[str] = []

    def stop_in_transaction(step: str) -> None:
        if step == "in_transaction" and not stopped:
            stopped.append(step)
            pg.stop("immediate")

    with open_store(url, settings=settings, on_step=stop_in_transaction) as reg:
        with pytest.raises(DatabaseUnavailableError) as caught:
            reg.push_adapter(make_adapter(seed=1), dataset="support-data")
        message = str(caught.value)
        assert "PostgreSQL database" in message and f"127.0.0.1:{pg.port}" in message
        assert "nothing of this command was recorded" in message
        # While it is down, the CLI says so: its own exit code, the database, no traceback.
        env = _cli_env()
        cli = subprocess.run(
            [REGISTRY, "push", str(make_adapter(seed=2)), "--registry", url,
             "--name", "support", "--dataset", "support-data"],
            capture_output=True, text=True, env=env, timeout=60,
        )  # fmt: skip
        assert cli.returncode == DatabaseUnavailableError.exit_code, cli.stderr
        assert f"127.0.0.1:{pg.port}" in cli.stderr and "Traceback" not in cli.stderr
        pg.start()
        # The same open registry reconnects; the interrupted push left nothing behind.
        assert [v.version for v in reg.list_adapters("support")] == [1]
        assert reg.push_adapter(make_adapter(seed=1), dataset="support-data").adapter.version == 2
    with open_store(url, settings=settings) as after:
        assert [v.version for v in after.list_adapters("support")] == [1, 2]
        assert [e.version for e in after.events("support") if e.action == "push"] == [1, 2]
        report = after.verify()
        assert report.ok, report
    verify = subprocess.run(
        [REGISTRY, "verify", "--registry", url], capture_output=True, text=True, env=env
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_a_registry_refuses_another_blob_store_and_a_foreign_database(
    postgres_server: Postgres, tmp_path: Path, settings: registry.RegistrySettings
) -> None:
    url = postgres_server.new_database()
    with open_store(url, str(tmp_path / "one"), settings=settings, create=True):
        pass
    with pytest.raises(registry.UnsupportedLocationError, match="keeps its blobs at"):
        open_store(url, str(tmp_path / "two"), settings=settings)
    empty = postgres_server.new_database()
    with pytest.raises(registry.NotARegistryError, match="holds no registry"):
        registry.open(empty, settings=settings, create=False)
    import psycopg

    with psycopg.connect(empty, autocommit=True) as conn:
        conn.execute("CREATE TABLE invoices (id integer)")
    with pytest.raises(registry.NotARegistryError, match="something else"):
        open_store(empty, str(tmp_path / "three"), settings=settings, create=True)


def test_a_password_never_appears_in_messages_or_the_location(
    postgres_server: Postgres, tmp_path: Path, settings: registry.RegistrySettings
) -> None:
    url = postgres_server.new_database()
    with_password = url.replace("postgres@", "postgres:s3cret-pw@")  # trust auth ignores it
    with open_store(with_password, str(tmp_path / "b"), settings=settings, create=True) as reg:
        assert "s3cret-pw" not in reg.location and reg.location == url
    closed = with_password.replace(f":{postgres_server.port}/", ":1/")
    with pytest.raises(DatabaseUnavailableError) as caught:
        open_store(closed, settings=settings)
    assert "s3cret-pw" not in str(caught.value) and "127.0.0.1:1" in str(caught.value)


def _cli_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    env.update(extra or {})
    return env


def test_init_and_serve_with_store_and_blobs_on_the_command_line(
    postgres_server: Postgres,
    seaweed_store: Any,
    tmp_path: Path,
    settings: registry.RegistrySettings,
    base_dir: Path,
) -> None:
    url = postgres_server.new_database()
    env = _cli_env(seaweed_store.env())

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [REGISTRY, *args], capture_output=True, text=True, env=env, timeout=120
        )

    refused = run("init", "--store", url)
    assert refused.returncode == registry.UnsupportedLocationError.exit_code
    assert "--blobs s3://" in refused.stderr
    s3 = seaweed_store.location()
    made = run("init", "--store", url, "--blobs", s3)
    assert made.returncode == 0 and f"registry ready at {url} (blobs in {s3})" in made.stdout
    added = run("base", "add", str(base_dir), "--name", "tiny-base", "--registry", url)
    assert added.returncode == 0, added.stderr
    other = run("serve", "--store", url, "--blobs", f"{s3}-other", "--port", "0")
    assert other.returncode == registry.UnsupportedLocationError.exit_code
    assert f"keeps its blobs at {s3}" in other.stderr and "Traceback" not in other.stderr
    listed = run("ls", "--json", "--registry", url)
    assert listed.returncode == 0 and "tiny-base" in listed.stdout

    served_url = postgres_server.new_database()
    blobs = str(tmp_path / "shared")
    assert run("init", "--store", served_url, "--blobs", blobs).returncode == 0
    port = str(free_port())
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            [REGISTRY, "serve", "--store", served_url, "--port", port],
            stdout=out, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with HttpRegistry(f"http://127.0.0.1:{port}", settings) as client:
                    assert client.list_bases() == []
                    client.add_base(base_dir, name="tiny-base")
                    break
            except registry.RegistryUnavailableError:
                assert server.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.3)
    finally:
        server.terminate()
        server.wait(30)
    with open_store(served_url, settings=settings) as reg:
        assert [b.name for b in reg.list_bases()] == ["tiny-base"]


def test_watches_on_a_server_fail_fast_while_postgres_is_down_and_work_after(
    private_postgres: Postgres,
    tmp_path: Path,
    settings: registry.RegistrySettings,
    base_dir: Path,
    make_adapter: Callable[..., Path],
) -> None:
    """Six long polls wait on one `registry serve` (one poller reads the token for all of
    them: registry/service/changes.py). PostgreSQL stopped as if killed: every watch ends
    within a few seconds with 503 `database_unavailable` (DatabaseUnavailableError), not at
    its 30 s timeout; once PostgreSQL is back, a new watch sees the next push."""
    pg = private_postgres
    url = pg.new_database()
    with open_store(url, str(tmp_path / "blobs-home"), settings=settings, create=True) as setup:
        setup.add_base(base_dir, name="tiny-base")
    with (
        registry_service(url, tmp_path / "serve.log") as server,
        HttpRegistry(server.url, settings) as client,
    ):
        since = client.change_token()
        ended: list[tuple[BaseException | int, float]] = []

        def watch() -> None:
            try:
                ended.append((client.wait_for_change(since, timeout_s=30), time.monotonic()))
            except Exception as exc:
                ended.append((exc, time.monotonic()))

        watchers = [threading.Thread(target=watch) for _ in range(6)]
        for w in watchers:
            w.start()
        time.sleep(0.5)  # all six wait at the server
        pg.stop("immediate")
        stopped = time.monotonic()
        for w in watchers:
            w.join(40)
        assert len(ended) == 6, ended
        for outcome, at in ended:
            assert isinstance(outcome, DatabaseUnavailableError), outcome
            assert at - stopped < 10, f"a watch ended {at - stopped:.1f} s after the stop"
        pg.start()
        since = client.change_token()  # the server reconnects
        seen: list[int] = []

        def watch_again() -> None:
            seen.append(client.wait_for_change(since, timeout_s=20))

        again = threading.Thread(target=watch_again)
        again.start()
        time.sleep(0.3)
        client.push_adapter(make_adapter(), allow_unknown_dataset=True)
        again.join(25)
        assert seen and seen[0] > since
