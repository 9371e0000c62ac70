"""The service's blobs in the registry directory's own ``blobs/``: an upload arrives in
``blobs/uploads/`` (on the blobs' filesystem) and is renamed into place once it hashes
right; a write's files are hard links to the blobs (copies where a link fails); a
download is the blob file itself."""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

from fastapi.responses import FileResponse
from starlette.responses import Response

from registry import errors as e
from registry.blobs import BlobWriter, FileBlobStore
from registry.digest import Digest
from registry.prepare import FileRef

#: Pieces of a download (64 KiB pieces cost a thread hop each).
DOWNLOAD_CHUNK = 4 * 2**20


class DirectoryBlobs:
    """:class:`~registry.service.uploads.ServedBlobs` over a :class:`FileBlobStore`."""

    def __init__(self, store: FileBlobStore) -> None:
        self.store = store

    def leftovers(self) -> tuple[Path, ...]:
        return (self.store.uploads,)

    def check_room(self, size: int) -> None:
        self.store.root.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(self.store.root).free
        if size > free:
            raise e.StorageFullError(
                f"an upload of {size} bytes does not fit in the {free} bytes free on the "
                "registry's storage; nothing was stored"
            )

    def writer(self) -> BlobWriter:
        return self.store.writer(self.store.uploads)

    def lay_out(self, ref: FileRef, out: Path) -> bool:
        blob = self.store.path(Digest(ref.digest).hex)
        try:
            size = blob.stat().st_size
        except FileNotFoundError:
            raise e.BadRequestError(
                f"{ref.path} ({ref.digest}) was not uploaded: POST /v1/blobs first"
            ) from None
        if size != ref.size:
            raise e.BadRequestError(f"{ref.path} is {size} bytes, not {ref.size}")
        try:
            os.link(blob, out)
        except OSError:
            shutil.copyfile(blob, out)
            return False
        return True

    def linked(self, links: dict[Path, str]) -> contextlib.AbstractContextManager[None]:
        return self.store.linked(links)

    def download(self, hexdigest: str, via_server: bool) -> tuple[Response, int]:
        path = self.store.path(hexdigest)
        if not path.is_file():
            raise e.RefNotFoundError(f"no blob {Digest.from_hex(hexdigest)} in the registry")
        response = FileResponse(path, media_type="application/octet-stream")
        response.chunk_size = DOWNLOAD_CHUNK
        return response, path.stat().st_size
