"""A real PostgreSQL for tests: Debian's server binaries (``initdb``, ``pg_ctl``), a cluster
in a fresh temporary directory on a free loopback port, started once per test session and
stopped at its end. Each test takes a fresh database (:meth:`Postgres.new_database`:
``CREATE DATABASE`` copies the empty ``template0``, in milliseconds).

The server runs as the ``postgres`` user when the tests run as root (PostgreSQL refuses
to run as root), so its directory and every parent must be reachable by that user: the
cluster lives under a directory made with mode 0755 in the system temp dir, not under
pytest's private ``tmp_path``. ``fsync`` is off (a test cluster; an immediate stop still
keeps every commit, as the data stays in the OS cache). ``scripts/test-deps.sh`` installs
the server where it is missing.
"""

from __future__ import annotations

import getpass
import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from tests.support.seaweed import free_ports

#: Where Debian puts the server binaries (newest version first).
BIN_GLOB = "/usr/lib/postgresql/*/bin"
START_TIMEOUT_S = 60


def server_bin() -> Path:
    """The directory of ``initdb`` and ``pg_ctl`` (raise, naming the fix, when absent)."""
    found = sorted(glob.glob(BIN_GLOB), key=lambda p: int(Path(p).parent.name), reverse=True)
    for candidate in found:
        if (Path(candidate) / "initdb").is_file():
            return Path(candidate)
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).parent
    raise RuntimeError(
        "PostgreSQL's server is missing: run scripts/test-deps.sh (Debian: apt-get install "
        "postgresql)"
    )


def _as_server_user(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


@dataclass
class Postgres:
    """A running cluster: where it listens, its data directory and log."""

    port: int
    data: Path
    sockets: Path
    log: Path
    bin: Path
    user: str
    #: Off for tests (speed); on for benches, which must time a durable commit.
    fsync: bool = False

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """The URL of a new, empty database (unique to the caller)."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:16]}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name} TEMPLATE template0")
        return self.url(name)

    def pg_ctl(self, *args: str) -> None:
        subprocess.run(
            _as_server_user([str(self.bin / "pg_ctl"), "-D", str(self.data), *args]),
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=START_TIMEOUT_S + 10,
        )

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.sockets} -c listen_addresses=127.0.0.1"
            f" -c fsync={'on' if self.fsync else 'off'}"
            " -c max_connections=200"
        )
        self.pg_ctl("-o", options, "-l", str(self.log), "-w", "-t", str(START_TIMEOUT_S), "start")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``immediate``: as if killed; no shutdown checkpoint)."""
        self.pg_ctl("-m", mode, "-w", "stop")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()


@contextmanager
def postgres(*, fsync: bool = False) -> Iterator[Postgres]:
    """A PostgreSQL cluster in a new temporary directory until the block ends (``fsync``:
    commits durable, as in production; tests run without)."""
    bin_dir = server_bin()
    work = Path(tempfile.mkdtemp(prefix="loraport-pg-"))
    work.chmod(0o755)
    data, sockets, log = work / "data", work / "sock", work / "postgres.log"
    sockets.mkdir()
    log.touch()
    if os.geteuid() == 0:
        shutil.chown(work, "postgres")
        shutil.chown(sockets, "postgres")
        shutil.chown(log, "postgres")
    user = "postgres" if os.geteuid() == 0 else getpass.getuser()
    subprocess.run(
        _as_server_user(
            [str(bin_dir / "initdb"), "-A", "trust", "-U", user, "-E", "UTF8",
             "--locale=C.UTF-8", "-D", str(data)]
        ),
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        timeout=120,
    )  # fmt: skip
    server = Postgres(free_ports(1)[0], data, sockets, log, bin_dir, user, fsync)
    try:
        server.start()
        yield server
    finally:
        if server.running():
            with suppress(subprocess.SubprocessError):
                server.stop("immediate")
        shutil.rmtree(work, ignore_errors=True)
