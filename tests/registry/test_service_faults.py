"""Faults on a real `registry serve`: concurrent pushes of one name over HTTP, and the
server killed with SIGKILL mid-upload and mid-push. Nothing is lost, nothing is half
visible, `registry verify` passes after a restart, and a killed write's scratch goes."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import threading
import time
from contextlib import suppress
from pathlib import Path

import registry
from registry import errors as e
from tests.support.launch import Process
from tests.support.registry_service import REGISTRY
from tests.support.served_registry import WRITE_TOKEN, Served, build_registry, served
from tests.support.synthetic import write_adapter


def kill9(proc: Process) -> None:
    """SIGKILL, as an OOM killer or a node failure would: no cleanup runs."""
    with suppress(ProcessLookupError):
        os.killpg(proc.popen.pid, signal.SIGKILL)
    proc.popen.wait(30)


def verify_cli(root: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    cmd = [REGISTRY, "verify", "--registry", str(root)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)


def test_eight_concurrent_pushes_of_one_name_get_versions_1_to_8(
    served_registry: Served, tmp_path: Path
) -> None:
    adapters = [write_adapter(tmp_path / str(i) / "racer", seed=i) for i in range(8)]
    barrier = threading.Barrier(8)
    got: list[int] = []
    errors: list[BaseException] = []

    def push(path: Path) -> None:
        try:
            with served_registry.open(WRITE_TOKEN) as reg:
                barrier.wait()
                result = reg.push_adapter(path, base="tiny-base", allow_unknown_dataset=True)
            got.append(result.adapter.version)
        except BaseException as exc:  # reported below, with the versions
            errors.append(exc)

    threads = [threading.Thread(target=push, args=(a,)) for a in adapters]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert sorted(got) == list(range(1, 9))
    with served_registry.open(WRITE_TOKEN) as reg:
        listed = reg.list_adapters("racer")
    assert sorted(v.version for v in listed) == list(range(1, 9))
    assert len({v.digest for v in listed}) == 8  # each push is its own, none lost


def test_kill_9_mid_upload_leaves_nothing_visible(tmp_path: Path) -> None:
    """The server SIGKILLed with an upload half received: after a restart no blob of it
    is visible, its temp file is gone, and verify passes."""
    root = build_registry(tmp_path / "reg", tmp_path)
    with served(root, tmp_path / "serve-1.log") as running:
        before = running.state()
        head = (
            b"POST /v1/blobs HTTP/1.1\r\nHost: x\r\n"
            + f"Authorization: Bearer {WRITE_TOKEN}\r\n".encode()
            + b"Content-Length: 4194304\r\n\r\n"
        )
        sock = socket.create_connection(("127.0.0.1", running.port))
        sock.sendall(head + b"\x01" * 2**20)
        deadline = time.monotonic() + 5
        while not list(running.uploads.glob("blob-*")) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert list(running.uploads.glob("blob-*")), "the upload never began"
        kill9(running.proc)
        sock.close()
    assert list(running.uploads.glob("blob-*"))  # what SIGKILL leaves: a temp file, no blob
    with served(root, tmp_path / "serve-2.log") as restarted:
        assert restarted.state() == before  # the temp file went at start
        with restarted.open(WRITE_TOKEN) as reg:
            report = reg.verify()
        assert report.ok and not report.orphans
    assert verify_cli(root).returncode == 0


def test_kill_9_mid_push_leaves_nothing_half_visible(tmp_path: Path) -> None:
    """Pushes in a loop; the server SIGKILLed at a random moment, three times over. After
    each restart: verify passes, versions run 1..n with no gap, every one pulls whole,
    and the scratch directory of the killed write is gone."""
    root = build_registry(tmp_path / "reg", tmp_path)
    rng = random.Random(18)
    pushed_ok = 0
    for round_ in range(3):
        with served(root, tmp_path / f"serve-{round_}.log") as running:
            stop = threading.Event()

            def pushes(
                url: str = running.url, n: int = round_, stop: threading.Event = stop
            ) -> None:
                settings = registry.RegistrySettings(user="tester", token=WRITE_TOKEN)
                with registry.open(url, settings=settings) as reg:
                    for i in range(1000):
                        if stop.is_set():
                            return
                        path = write_adapter(tmp_path / f"a{n}-{i}" / "crashy", seed=n * 1000 + i)
                        with suppress(e.RegistryUnavailableError):
                            reg.push_adapter(path, base="tiny-base", allow_unknown_dataset=True)

            worker = threading.Thread(target=pushes)
            worker.start()
            time.sleep(rng.uniform(0.5, 2.0))
            kill9(running.proc)
            stop.set()
            worker.join(60)
        # A write's scratch a killed server could have left: gone after the next start.
        leftover = root / "incoming" / "write-left-by-a-killed-server" / "adapter"
        leftover.mkdir(parents=True, exist_ok=True)
        (leftover / "adapter_model.safetensors").write_bytes(b"half")
        with served(root, tmp_path / f"serve-{round_}-after.log") as running:
            assert not (root / "incoming" / "write-left-by-a-killed-server").exists()
            with running.open(WRITE_TOKEN) as reg:
                assert reg.verify().ok
                versions = sorted(v.version for v in reg.list_adapters("crashy"))
                assert versions == list(range(1, len(versions) + 1))
                for v in versions:
                    reg.pull(f"crashy@{v}", tmp_path / f"pulled-{round_}-{v}")
            assert len(versions) >= pushed_ok
            pushed_ok = len(versions)
        assert verify_cli(root).returncode == 0, verify_cli(root).stdout
    print(f"{pushed_ok} pushes committed across 3 kills")
    assert pushed_ok >= 1


def test_a_second_server_leaves_the_first_ones_scratch_alone(tmp_path: Path) -> None:
    """Start-up removes a killed server's scratch, but never a live one's: a second
    `registry serve` on the same directory (a rolling restart) finds the first present
    (its lock on serve.lock) and cleans nothing; once both are gone, the next does."""
    root = build_registry(tmp_path / "reg", tmp_path)
    live = root / "incoming" / "write-in-flight"
    upload = root / "blobs" / "uploads" / "blob-in-flight"
    with served(root, tmp_path / "first.log"):
        live.mkdir(parents=True)
        upload.parent.mkdir(parents=True, exist_ok=True)
        upload.write_bytes(b"arriving")
        with served(root, tmp_path / "second.log") as second:
            assert live.is_dir() and upload.is_file()
            with second.open(WRITE_TOKEN) as reg:
                assert reg.verify().ok
    with served(root, tmp_path / "third.log"):
        assert not live.exists() and not upload.exists()
