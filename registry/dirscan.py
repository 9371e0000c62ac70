"""Safe listing of a directory to be recorded: regular files only, no symlinks, no escapes."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

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


def check_relpath(relpath: str) -> None:
    """Raise ScanError unless ``relpath`` is a plain relative POSIX path inside its root."""
    parts = PurePosixPath(relpath).parts
    if not parts or any(p in ("", ".", "..") for p in parts) or relpath.startswith("/"):
        raise ScanError(AdapterProblem.UNSAFE_PATH, f"unsafe path {relpath!r}")
    if any(ord(c) < 32 or c == "\\" for c in relpath):
        raise ScanError(AdapterProblem.UNSAFE_PATH, f"unsafe characters in file name {relpath!r}")


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
