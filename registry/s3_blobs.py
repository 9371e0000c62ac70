"""Content-addressed blob store on S3-compatible object storage (AWS S3, MinIO, SeaweedFS,
Ceph, GCS's S3 API), behind the same :class:`~registry.blobs.BlobStore` protocol as the
directory form.

Layout under ``s3://BUCKET/PREFIX``: ``PREFIX/sha256/<hex>`` (one object per distinct
content, never rewritten) and ``PREFIX/tmp/<random>`` (writes in progress). The endpoint
and credentials come from the standard AWS variables (``AWS_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``) or the AWS config files,
read by boto3 itself, so every S3-compatible store works unchanged.

**Writing.** :meth:`S3BlobStore.put_file` hashes the bytes as it sends them, and an
object appears under a digest key only once its bytes were hashed:

- a file that fits in one part (:data:`PART_BYTES`) is in memory and hashed before the
  request is sent, so it goes straight to its digest key in one ``PutObject`` carrying
  ``x-amz-checksum-sha256``: the store refuses a body that does not hash to it, and a
  ``PutObject`` is atomic (the object appears whole or not at all);
- a larger file is streamed part by part (one part in memory at a time; its first part
  is read twice, once to learn it is larger) as a multipart upload to a temp key, then
  copied server-side to its digest key (no byte passes through this process again) and
  the temp key deleted. Uploading straight to the digest key is impossible (the key is
  known only after the last byte was read); hashing the whole file first would read it
  twice and let bytes that changed between the two reads land under a digest they do
  not match. S3's own multipart checksum is a checksum of the parts'
  checksums, not the object's sha256, so it cannot name the object.

A file whose digest is already stored sends nothing more, but the object is made new
(a server-side copy onto itself) so a ``gc`` of old orphans spares it until the write
that needs it again has committed its record.

**Reading** re-hashes every byte (:meth:`~S3BlobStore.copy_out`,
:meth:`~S3BlobStore.read_bytes`, :meth:`~S3BlobStore.problem`): a bucket is writable by
whoever holds its keys, so a lost or altered object is an ``IntegrityError`` and
``registry verify`` reports it.

**Crash safety.** A killed upload leaves a temp object or an incomplete multipart upload
under ``tmp/``, never a digest key; :meth:`~S3BlobStore.temp_files` lists both and
:meth:`~S3BlobStore.collect` removes them (and blobs no record names) once older than the
grace period. Ages are measured on the object store's clock (its ``Date`` header against
``LastModified`` and ``Initiated``), never this host's.

**Errors.** An endpoint that does not answer, a 5xx, refused credentials or a missing
bucket is :class:`~registry.errors.StorageUnavailableError` (503, exit 46), mapped once
in :meth:`S3BlobStore._unavailable_is_typed`.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import itertools
import math
import os
import re
import uuid
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path, PurePosixPath
from typing import IO, Any

from botocore.exceptions import BotoCoreError, ClientError

from registry.blobs import BlobStore, ByteCallback, Hook, write_all
from registry.digest import CHUNK_BYTES, Digest
from registry.errors import IntegrityError, StorageUnavailableError, UnsupportedLocationError

#: Upload in parts this large: above S3's 5 MiB minimum, and the most held in memory.
PART_BYTES = 8 * 2**20
#: S3's limits: parts per multipart upload, and the largest single ``CopyObject``.
MAX_PARTS = 10_000
MAX_COPY_BYTES = 5 * 2**30
#: The error codes that mean "no such object" (HeadObject has no body, so only "404").
_MISSING = frozenset({"NoSuchKey", "NotFound", "404"})
_HEX = re.compile(r"[0-9a-f]{64}")
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


@dataclass(frozen=True, slots=True)
class S3Location:
    """``s3://BUCKET/PREFIX``: where a registry's blobs live (the prefix may be empty)."""

    bucket: str
    prefix: str

    @classmethod
    def parse(cls, url: str) -> S3Location:
        """``s3://bucket/some/prefix`` -> (``bucket``, ``some/prefix``)."""
        if not url.startswith("s3://"):
            raise UnsupportedLocationError(f"{url!r} is not an s3://BUCKET/PREFIX location")
        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        if not _BUCKET.fullmatch(bucket):
            raise UnsupportedLocationError(
                f"{url!r} names no valid bucket: expected s3://BUCKET/PREFIX with a bucket "
                "name of 3-63 lower-case letters, digits, dots and hyphens"
            )
        prefix = prefix.strip("/")
        if "//" in prefix or any(part in (".", "..") for part in prefix.split("/")):
            raise UnsupportedLocationError(f"{url!r}: the prefix has an empty or dot segment")
        return cls(bucket, prefix)

    def key(self, *parts: str) -> str:
        """The object key of ``parts`` under the prefix."""
        return "/".join((self.prefix, *parts) if self.prefix else parts)

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"


def s3_client() -> Any:
    """An S3 client configured by the standard AWS variables and files (boto3 reads them),
    with bounded timeouts and retries so a store that is down fails in seconds."""
    import boto3  # loaded only when a registry keeps its blobs in S3
    from botocore.config import Config

    config = Config(
        connect_timeout=5,
        read_timeout=60,
        retries={"mode": "standard", "max_attempts": 3},
    )
    return boto3.session.Session().client("s3", config=config)


def _read_full(fh: IO[bytes], size: int) -> bytes:
    """Up to ``size`` bytes (fewer only at the end of the file)."""
    data = fh.read(size)  # a regular file gives it all in one read, without a copy
    if len(data) == size or not data:
        return data
    pieces, want = [data], size - len(data)
    while want and (piece := fh.read(want)):
        pieces.append(piece)
        want -= len(piece)
    return b"".join(pieces)


def part_bytes(size: int) -> int:
    """The part size for a file of ``size`` bytes: :data:`PART_BYTES`, or larger (whole
    MiB) when that would take more than :data:`MAX_PARTS` parts."""
    return max(PART_BYTES, math.ceil(size / MAX_PARTS / 2**20) * 2**20)


class S3BlobStore:
    """A :class:`~registry.blobs.BlobStore` in an S3 bucket, under a prefix.

    ``client`` is a boto3 S3 client (default: :func:`s3_client`). Thread-safe: boto3
    clients are, and the only other state is :meth:`linked`'s table, keyed by files no
    two writes share.
    """

    def __init__(self, location: S3Location | str, client: Any | None = None) -> None:
        self.location = location if isinstance(location, S3Location) else S3Location.parse(location)
        self.bucket = self.location.bucket
        self._client = client if client is not None else s3_client()
        # (st_dev, st_ino) -> hex digest of files the registry service copied out of the
        # bucket (verified) for one write: put_file of one uploads nothing again.
        self._linked: dict[tuple[int, int], str] = {}

    @property
    def endpoint(self) -> str:
        """The object store's URL (from ``AWS_ENDPOINT_URL`` or the region)."""
        return str(self._client.meta.endpoint_url)

    def key(self, hexdigest: str) -> str:
        """The object key of the blob with this hex digest."""
        return self.location.key("sha256", hexdigest)

    def check(self) -> None:
        """Raise StorageUnavailableError unless the bucket answers (``registry init``)."""
        self._server_now()

    # -- errors -------------------------------------------------------------------------
    @contextlib.contextmanager
    def _unavailable_is_typed(self, doing: str) -> Iterator[None]:
        """Every failure of the object store itself becomes StorageUnavailableError."""
        try:
            yield
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = error.get("Code", "?")
            if code == "NoSuchBucket":
                why = f"bucket {self.bucket!r} does not exist there: create it, or fix the URL"
            elif code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
                why = (
                    f"it refused access ({code}): check AWS_ACCESS_KEY_ID / "
                    f"AWS_SECRET_ACCESS_KEY and that bucket {self.bucket!r} exists"
                )
            else:
                why = f"it answered {code}: {error.get('Message', '')}".rstrip(": ")
            raise StorageUnavailableError(
                f"the object store at {self.endpoint} failed while {doing} {self.location} "
                f"({why}); nothing was recorded"
            ) from None
        except BotoCoreError as exc:  # refused, timed out, cut off mid-body, no credentials
            raise StorageUnavailableError(
                f"the object store at {self.endpoint} did not answer while {doing} "
                f"{self.location} ({exc}); check AWS_ENDPOINT_URL and the credentials, and "
                "run it again once the store is back"
            ) from None

    @staticmethod
    def _is_missing(exc: ClientError) -> bool:
        return exc.response.get("Error", {}).get("Code") in _MISSING

    # -- writing ------------------------------------------------------------------------
    @contextlib.contextmanager
    def linked(self, links: dict[Path, str]) -> Iterator[None]:
        """While the block runs, ``put_file`` of a path in ``links`` (a file whose bytes
        the caller verified to be the stored blob of the given hex digest) is that blob:
        nothing is read or sent again, once the object is seen still there."""
        keys = []
        for path, hexdigest in links.items():
            info = path.stat()
            keys.append((info.st_dev, info.st_ino))
            self._linked[keys[-1]] = hexdigest
        try:
            yield
        finally:
            for key in keys:
                self._linked.pop(key, None)

    def _already_stored(self, src: Path) -> tuple[str, int] | None:
        if not self._linked:
            return None
        info = src.stat()
        hexdigest = self._linked.get((info.st_dev, info.st_ino))
        if hexdigest is None or not self.has(hexdigest):
            return None
        return hexdigest, info.st_size

    def put_file(
        self, src: Path, on_bytes: ByteCallback | None = None, before_rename: Hook | None = None
    ) -> tuple[str, int]:
        """Store a file's bytes, hashed as they are sent; return (hex digest, size).
        ``before_rename`` runs once the bytes are hashed, before anything appears under
        the digest key."""
        stored = self._already_stored(src)
        if stored is not None:
            if on_bytes is not None:
                on_bytes(stored[1])
            if before_rename is not None:
                before_rename()
            return stored
        with open(src, "rb", buffering=0) as fh, self._unavailable_is_typed("writing to"):
            part = part_bytes(os.fstat(fh.fileno()).st_size)
            first = _read_full(fh, part)
            if len(first) < part:
                hexdigest = hashlib.sha256(first).hexdigest()
                return self._put_whole(first, hexdigest, on_bytes, before_rename)
            del first  # a part in memory at a time: the upload reads it again
            fh.seek(0)
            temp = self.location.key("tmp", uuid.uuid4().hex)
            hexdigest, size = self._upload_parts(fh, temp, part, on_bytes)
            try:
                if before_rename is not None:
                    before_rename()
                if not self.has(hexdigest):
                    self._copy(temp, self.key(hexdigest), size)
                else:
                    self._touch(hexdigest, size)
            finally:
                self._client.delete_object(Bucket=self.bucket, Key=temp)
        return hexdigest, size

    def _put_whole(
        self, data: bytes, hexdigest: str, on_bytes: ByteCallback | None, before: Hook | None
    ) -> tuple[str, int]:
        if on_bytes is not None:
            on_bytes(len(data))
        if before is not None:
            before()
        if not self.has(hexdigest):
            checksum = base64.b64encode(bytes.fromhex(hexdigest)).decode()
            self._client.put_object(
                Bucket=self.bucket, Key=self.key(hexdigest), Body=data, ChecksumSHA256=checksum
            )
        else:
            self._touch(hexdigest, len(data))
        return hexdigest, len(data)

    def _touch(self, hexdigest: str, size: int) -> None:
        """Make a blob stored before look new (its ``LastModified`` now): a write that
        needs it again must not lose it to a ``gc`` of orphans older than the grace
        period. A server-side copy onto itself: no byte passes through this process."""
        key = self.key(hexdigest)
        if size > MAX_COPY_BYTES:
            self._copy(key, key, size)
            return
        self._client.copy_object(
            Bucket=self.bucket,
            Key=key,
            CopySource={"Bucket": self.bucket, "Key": key},
            MetadataDirective="REPLACE",
            Metadata={"needed": "again"},
        )

    def _upload_parts(
        self,
        fh: IO[bytes],
        key: str,
        part: int,
        on_bytes: ByteCallback | None,
    ) -> tuple[str, int]:
        """A multipart upload of ``fh`` to ``key``, hashing as it reads; (hex digest of
        what was uploaded, size). Aborted (nothing left behind) if it fails."""
        upload = self._client.create_multipart_upload(Bucket=self.bucket, Key=key)["UploadId"]
        try:
            parts: list[dict[str, Any]] = []
            digest, size = hashlib.sha256(), 0
            while chunk := _read_full(fh, part):
                digest.update(chunk)
                number = len(parts) + 1
                sent = self._client.upload_part(
                    Bucket=self.bucket, Key=key, UploadId=upload, PartNumber=number, Body=chunk
                )
                parts.append({"ETag": sent["ETag"], "PartNumber": number})
                size += len(chunk)
                if on_bytes is not None:
                    on_bytes(len(chunk))
                del chunk  # before the next part is read
            self._client.complete_multipart_upload(
                Bucket=self.bucket, Key=key, UploadId=upload, MultipartUpload={"Parts": parts}
            )
        except BaseException:
            with contextlib.suppress(ClientError, BotoCoreError):
                self._client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload)
            raise
        return digest.hexdigest(), size

    def _copy(self, src: str, dest: str, size: int) -> None:
        """Server-side copy (a multipart copy above S3's 5 GiB ``CopyObject`` limit)."""
        source = {"Bucket": self.bucket, "Key": src}
        if size <= MAX_COPY_BYTES:
            self._client.copy_object(Bucket=self.bucket, Key=dest, CopySource=source)
            return
        from boto3.s3.transfer import TransferConfig

        config = TransferConfig(multipart_threshold=MAX_COPY_BYTES, multipart_chunksize=2**30)
        self._client.copy(source, self.bucket, dest, Config=config)

    # -- reading ------------------------------------------------------------------------
    def has(self, hexdigest: str) -> bool:
        with self._unavailable_is_typed("reading"):
            try:
                self._client.head_object(Bucket=self.bucket, Key=self.key(hexdigest))
            except ClientError as exc:
                if self._is_missing(exc):
                    return False
                raise
        return True

    def size(self, hexdigest: str) -> int | None:
        """The blob's size in bytes, or None when it is missing."""
        with self._unavailable_is_typed("reading"):
            try:
                head = self._client.head_object(Bucket=self.bucket, Key=self.key(hexdigest))
            except ClientError as exc:
                if self._is_missing(exc):
                    return None
                raise
        return int(head["ContentLength"])

    def presigned_url(self, hexdigest: str, expires_s: int) -> str:
        """A URL that fetches the blob's object without credentials for ``expires_s``
        seconds (signed here, no request made; whoever fetches it verifies the bytes)."""
        with self._unavailable_is_typed("signing for"):
            url: str = self._client.generate_presigned_url(
                "get_object",
                Params={"Bucket": self.bucket, "Key": self.key(hexdigest)},
                ExpiresIn=expires_s,
            )
        return url

    def chunks(self, hexdigest: str) -> Generator[bytes, None, None]:
        """The blob's bytes as stored, unverified (the reader verifies them); an
        IntegrityError when it is missing."""
        return self._chunks(hexdigest)

    def _body(self, hexdigest: str) -> Any | None:
        """The object's streaming body, or None when it is missing."""
        try:
            return self._client.get_object(Bucket=self.bucket, Key=self.key(hexdigest))["Body"]
        except ClientError as exc:
            if self._is_missing(exc):
                return None
            raise

    def _chunks(self, hexdigest: str) -> Generator[bytes, None, None]:
        """The blob's bytes in pieces; IntegrityError when it is missing."""
        with self._unavailable_is_typed("reading"):
            body = self._body(hexdigest)
            if body is None:
                raise IntegrityError(f"blob {Digest.from_hex(hexdigest)} is missing")
            with contextlib.closing(body):
                yield from body.iter_chunks(CHUNK_BYTES)

    def read_bytes(self, hexdigest: str) -> bytes:
        """Read a small blob, verifying it."""
        data = b"".join(self._chunks(hexdigest))
        if hashlib.sha256(data).hexdigest() != hexdigest:
            raise IntegrityError(
                f"blob {Digest.from_hex(hexdigest)} is corrupt (its bytes changed)"
            )
        return data

    def copy_out(self, hexdigest: str, dest: Path, on_bytes: ByteCallback | None = None) -> None:
        """Copy a blob to ``dest`` (created), verifying its hash; raise IntegrityError."""
        with contextlib.closing(self._chunks(hexdigest)) as chunks:
            first = next(chunks, b"")  # a missing blob fails here, before dest exists
            digest = hashlib.sha256()
            fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                for chunk in itertools.chain((first,), chunks):
                    digest.update(chunk)
                    write_all(fd, chunk)
                    if on_bytes is not None:
                        on_bytes(len(chunk))
                os.fsync(fd)
            finally:
                os.close(fd)
        if digest.hexdigest() != hexdigest:
            raise IntegrityError(
                f"blob {Digest.from_hex(hexdigest)} is corrupt (its bytes now hash to "
                f"{Digest.from_hex(digest.hexdigest())}); "
                "run `registry verify` and push the adapter again"
            )

    def problem(self, hexdigest: str) -> str | None:
        """None if the blob is present and intact, else what is wrong with it."""
        digest = hashlib.sha256()
        try:
            for chunk in self._chunks(hexdigest):
                digest.update(chunk)
        except IntegrityError:
            return "missing"
        if digest.hexdigest() != hexdigest:
            return f"corrupt (hashes to {Digest.from_hex(digest.hexdigest())})"
        return None

    # -- listing and collecting -------------------------------------------------------
    def _objects(self, under: str) -> Iterator[tuple[str, datetime]]:
        """(key, last modified) of every object under ``under``, in key order."""
        with self._unavailable_is_typed("listing"):
            pages = self._client.get_paginator("list_objects_v2")
            for page in pages.paginate(Bucket=self.bucket, Prefix=under):
                for item in page.get("Contents", ()):
                    yield item["Key"], item["LastModified"]

    def _uploads(self) -> Iterator[tuple[str, str, datetime]]:
        """(key, upload id, initiated) of every unfinished multipart upload under tmp/."""
        with self._unavailable_is_typed("listing"):
            pages = self._client.get_paginator("list_multipart_uploads")
            for page in pages.paginate(Bucket=self.bucket, Prefix=self.location.key("tmp", "")):
                for item in page.get("Uploads", ()):
                    yield item["Key"], item["UploadId"], item["Initiated"]

    def digests(self) -> Iterator[str]:
        """Every blob present (hex digests)."""
        under = self.location.key("sha256", "")
        for key, _ in self._objects(under):
            name = key[len(under) :]
            if _HEX.fullmatch(name):
                yield name

    def temp_files(self) -> list[PurePosixPath]:
        """The temp objects and unfinished multipart uploads of writes that never
        finished (or are in progress), as keys."""
        keys = {key for key, _ in self._objects(self.location.key("tmp", ""))}
        keys |= {key for key, _, _ in self._uploads()}
        return [PurePosixPath(key) for key in sorted(keys)]

    def _server_now(self) -> datetime:
        """The object store's clock (its ``Date`` header), whole seconds."""
        with self._unavailable_is_typed("reading"):
            answer = self._client.head_bucket(Bucket=self.bucket)
        date = answer["ResponseMetadata"]["HTTPHeaders"].get("date")
        return parsedate_to_datetime(date) if date else datetime.now(UTC)

    def collect(self, keep: set[str], grace_s: float) -> list[str]:
        """Delete orphan blobs, temp objects and unfinished uploads older than ``grace_s``
        (on the store's clock); return what went."""
        cutoff = self._server_now() - timedelta(seconds=grace_s)
        removed: list[str] = []
        under = self.location.key("sha256", "")
        doomed = [
            key
            for key, modified in self._objects(under)
            if _HEX.fullmatch(key[len(under) :])
            and key[len(under) :] not in keep
            and modified <= cutoff
        ]
        temps = [
            k for k, modified in self._objects(self.location.key("tmp", "")) if modified <= cutoff
        ]
        uploads = [(key, upload) for key, upload, started in self._uploads() if started <= cutoff]
        with self._unavailable_is_typed("collecting in"):
            for key in doomed:
                self._client.delete_object(Bucket=self.bucket, Key=key)
                removed.append(str(Digest.from_hex(key[len(under) :])))
            for key in temps:
                self._client.delete_object(Bucket=self.bucket, Key=key)
                removed.append(f"tmp/{PurePosixPath(key).name}")
            for key, upload in uploads:
                with contextlib.suppress(ClientError):  # finished or aborted meanwhile
                    self._client.abort_multipart_upload(
                        Bucket=self.bucket, Key=key, UploadId=upload
                    )
                    removed.append(f"tmp/{PurePosixPath(key).name}")
        return removed


def _conforms(store: S3BlobStore) -> BlobStore:
    return store  # mypy checks here that S3BlobStore offers the whole BlobStore protocol
