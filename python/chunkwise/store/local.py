"""The local file system as a cache's store: regular files only, ``flock``'d temporaries,
``os.replace``, and the owner and mode rules under which a directory is trusted without a key."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from chunkwise.errors import CacheError
from chunkwise.store.base import TEMP_SUFFIX, FileStat, Unsafe

__all__ = ["LocalStore"]


def _owner(uid: int) -> str:
    import pwd

    try:
        return f"user {pwd.getpwuid(uid).pw_name!r} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def _read_regular(path: Path, limit: int | None = None) -> bytes | None:
    """The bytes of a regular file, or None if there is none; never follows a symlink, never
    blocks on a FIFO, never reads more than the file's size (or ``limit``)."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        return None
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise Unsafe("a symbolic link") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise Unsafe("not a regular file")
        if limit is not None and st.st_size > limit:
            raise Unsafe(f"{st.st_size} bytes, more than a record can be")
        chunks, left = [], st.st_size
        while left > 0:
            block = os.read(fd, min(left, 1 << 24))
            if not block:
                break
            chunks.append(block)
            left -= len(block)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _local_kind(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "directory"
    return "symlink" if stat.S_ISLNK(mode) else "other"


def _entry_kind(entry: os.DirEntry[str]) -> str:
    try:
        if entry.is_symlink():
            return "symlink"
        if entry.is_file(follow_symlinks=False):
            return "file"
        return "directory" if entry.is_dir(follow_symlinks=False) else "other"
    except FileNotFoundError:  # removed meanwhile
        return "other"


class LocalStore:
    """The POSIX file system: regular files only, ``flock``'d temporaries and ``os.replace``."""

    remote = False
    needs_key = False  # a directory only you can write is trusted without one
    transient_errors = False

    @staticmethod
    def read(path: Path, limit: int | None = None) -> bytes | None:
        return _read_regular(path, limit)

    @staticmethod
    def write_atomic(path: Path, data: bytes, shared: bool) -> None:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
        try:
            # Held until the file is renamed and closed: remove_stale_temporaries never
            # deletes a file that a live writer holds.
            fcntl.flock(fd, fcntl.LOCK_EX)
            if shared:  # the group reads and replaces a shared cache's entries
                os.fchmod(fd, 0o660)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
                # No fsync of the directory after the rename: a power cut can then at worst
                # lose the new name (a cache miss, recomputed), never expose a torn entry.
                os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    @staticmethod
    def listdir(path: Path) -> list[str]:
        return os.listdir(path)

    @staticmethod
    def stat(path: Path) -> FileStat:
        """``os.lstat`` (a symbolic link is not followed); raises ``FileNotFoundError``."""
        st = os.lstat(path)
        return FileStat(_local_kind(st.st_mode), st.st_size, st.st_mtime)

    @staticmethod
    def kinds(directory: Path) -> dict[str, str]:
        """Each name in ``directory`` with its kind, from the directory's own entries (no
        ``stat`` of each file where the file system records the type, as ext4, XFS, tmpfs
        and NFS do)."""
        with os.scandir(directory) as found:
            return {entry.name: _entry_kind(entry) for entry in found}

    @classmethod
    def scan(cls, directory: Path) -> list[tuple[str, FileStat]]:
        """Each name in ``directory`` (in ``os.listdir``'s order) with its ``stat``; a name
        removed meanwhile is left out."""
        found = []
        for name in os.listdir(directory):
            with contextlib.suppress(FileNotFoundError):
                found.append((name, cls.stat(directory / name)))
        return found

    @staticmethod
    def remove(path: Path) -> None:
        path.unlink()

    @staticmethod
    def rmdir(path: Path) -> None:
        os.rmdir(path)

    @staticmethod
    def probe(directory: Path) -> None:
        fd, probe = tempfile.mkstemp(prefix=".chunkwise-probe.", dir=directory)
        os.close(fd)
        os.unlink(probe)

    @staticmethod
    def temporaries(directory: Path, min_age: float, ours: Callable[[str], bool]) -> Iterator[Path]:
        try:
            names = os.listdir(directory)
        except (FileNotFoundError, NotADirectoryError):
            return
        now = time.time()
        for name in names:
            if not ours(name):
                continue
            path = directory / name
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
            except OSError:
                continue
            try:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
                    continue
                if now - st.st_mtime < min_age:
                    continue
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a live writer holds it
                yield path
            finally:
                os.close(fd)

    @staticmethod
    def check_directory(path: Path, create: bool, key: bytes | None) -> bool:
        """Check one directory; return False if it does not exist (and ``create`` is off).

        Without a key it must be yours and writable by no one else; with one (entries are
        authenticated) it may be shared. A directory made here is mode 0o700, or 0o2770 (the
        group's) with a key.
        """
        try:
            st = os.stat(path)
        except FileNotFoundError:
            if not create:
                return False
            try:
                path.mkdir(mode=0o700, parents=True)
            except FileExistsError:
                pass
            except OSError as err:
                raise CacheError(
                    f"cache {str(path)!r}: cannot create it ({err.strerror or err}); "
                    "choose a directory you can write to"
                ) from None
            st = os.stat(path)
            if st.st_uid == os.geteuid():
                # mkdir's mode is filtered by the umask, which can only remove bits. A keyed
                # cache is shared by a group: its directories are the group's too.
                os.chmod(path, 0o2770 if key is not None else 0o700)
                st = os.stat(path)
        except NotADirectoryError:
            raise CacheError(
                f"cache {str(path)!r}: a part of this path is a file; give a directory"
            ) from None
        except OSError as err:
            raise CacheError(f"cache {str(path)!r}: {err.strerror or err}") from None
        if not stat.S_ISDIR(st.st_mode):
            raise CacheError(f"cache {str(path)!r} is not a directory; give a directory")
        if key is not None:
            return True  # entries are authenticated: the directory may be shared
        if st.st_uid != os.geteuid():
            raise CacheError(
                f"cache {str(path)!r} is owned by {_owner(st.st_uid)}, not by you: chunkwise "
                "never loads pickles another user could have written; use a cache directory "
                "of your own, or share one with a key (cache_key= / --cache-key-file)"
            )
        if st.st_mode & 0o022:
            raise CacheError(
                f"cache {str(path)!r} is writable by group or others (mode "
                f"{stat.S_IMODE(st.st_mode):o}): chunkwise never loads pickles others could "
                f"have written; run chmod go-w {str(path)!r}, or share it with a key "
                "(cache_key= / --cache-key-file)"
            )
        return True
