"""Safe listing of a directory to be recorded: regular files only, no symlinks, no escapes."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from registry.errors import AdapterProblem


class ScanError(Exception):
    """A directory cannot be recorded as it is; ``problem`` says why."""

    def __init__(self, problem: AdapterProblem, message: str) -> None:
        super().__init__(message)
        self.problem = problem


@dataclass(frozen=True, slots=True)
class ScannedFile:
    """A regular file inside the scanned root."""

    relpath: str
    path: Path
    size: int


#: The longest relative path a record may hold, and the longest part of one (bytes, as
#: most filesystems count: NAME_MAX is 255 on Linux, macOS and Windows alike).
MAX_RELPATH_BYTES = 1024
MAX_PART_BYTES = 255


def check_relpath(relpath: str) -> None:
    """Raise ScanError unless ``relpath`` is a plain relative POSIX path inside its root,
    written in its one normal form: ``a/b.json``, never ``/a``, ``./a``, ``a/../b``,
    ``a//b`` or ``a/`` (a path that names the same file in two spellings could be
    recorded twice, and a path that climbs out lands a client's file anywhere)."""
    if not isinstance(relpath, str) or not relpath:
        raise ScanError(AdapterProblem.UNSAFE_PATH, f"unsafe path {relpath!r}")
    if any(ord(c) < 32 or c in "\\\x7f" for c in relpath):
        raise ScanError(AdapterProblem.UNSAFE_PATH, f"unsafe characters in file name {relpath!r}")
    parts = relpath.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise ScanError(AdapterProblem.UNSAFE_PATH, f"unsafe path {relpath!r}")
    size = len(relpath.encode("utf-8", "surrogateescape"))
    longest = max(len(p.encode("utf-8", "surrogateescape")) for p in parts)
    if size > MAX_RELPATH_BYTES or longest > MAX_PART_BYTES:
        raise ScanError(
            AdapterProblem.UNSAFE_PATH,
            f"path {relpath[:64]!r}... is too long (at most {MAX_RELPATH_BYTES} bytes, "
            f"{MAX_PART_BYTES} per name)",
        )


def scan_directory(root: Path, max_file_bytes: int) -> list[ScannedFile]:
    """All regular files under ``root`` sorted by relative path; raise ScanError."""
    if root.is_symlink() or not root.is_dir():
        raise ScanError(AdapterProblem.NOT_A_DIRECTORY, f"{root} is not a directory")
    root_real = root.resolve()
    found: list[ScannedFile] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(dirpath)
        for name in [*dirnames, *filenames]:
            path = here / name
            info = path.lstat()
            relpath = path.relative_to(root).as_posix()
            if stat.S_ISLNK(info.st_mode):
                raise ScanError(
                    AdapterProblem.UNSAFE_PATH,
                    f"{relpath} is a symlink; copy the real file into the directory instead",
                )
            if stat.S_ISDIR(info.st_mode):
                continue
            if not stat.S_ISREG(info.st_mode):
                raise ScanError(AdapterProblem.UNSAFE_PATH, f"{relpath} is not a regular file")
            check_relpath(relpath)
            if not path.resolve().is_relative_to(root_real):
                raise ScanError(AdapterProblem.UNSAFE_PATH, f"{relpath} escapes {root}")
            if info.st_size > max_file_bytes:
                raise ScanError(
                    AdapterProblem.FILE_TOO_LARGE,
                    f"{relpath} is {info.st_size} bytes, above the limit of {max_file_bytes}; "
                    "raise REGISTRY_MAX_FILE_BYTES if that is intended",
                )
            found.append(ScannedFile(relpath, path, info.st_size))
    if not found:
        raise ScanError(AdapterProblem.EMPTY, f"{root} is empty: nothing to record")
    return sorted(found, key=lambda f: f.relpath)
