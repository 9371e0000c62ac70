"""A blob put that SIGKILLs its own process at a chosen step, as a crash would:

    python -m tests.support.killed_put LOCATION FILE STEP

LOCATION is a blob-store directory or ``s3://BUCKET/PREFIX`` (the AWS variables point at
the store); STEP is ``mid-upload`` (after the first piece was written) or ``before-rename``
(all bytes written and hashed, nothing under the digest yet). Only tests run this."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from registry.blobs import BlobStore, FileBlobStore
from registry.s3_blobs import S3BlobStore


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def main(location: str, src: str, step: str) -> None:
    store: BlobStore = (
        S3BlobStore(location) if location.startswith("s3://") else FileBlobStore(Path(location))
    )
    if step == "mid-upload":
        store.put_file(Path(src), on_bytes=lambda _: die())
    elif step == "before-rename":
        store.put_file(Path(src), before_rename=die)
    raise SystemExit(f"unknown step {step!r} (or the put finished without reaching it)")


if __name__ == "__main__":
    main(*sys.argv[1:])
