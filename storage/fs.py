"""One storage location (a URL plus fsspec options) with atomic writes and safe relative paths.

Everything sisa persists goes through a :class:`Store`, so the durability rules live here once:

* Local disk: each write goes to a temp file in the destination directory, is fsynced, and is
  then renamed over the final name (``os.replace``); the directory is fsynced afterwards where
  the platform allows. A crash therefore leaves either the old file or the new one, never a torn
  one. Temp files start with :data:`TEMP_PREFIX` so a sweep can find what a crash left behind.
* Object stores (s3://, gs://, ...): a single PUT, which the service makes visible atomically.
* Listings must reflect writes made a moment ago, possibly by another process, so listing caches
  are switched off for object stores and invalidated after every mutation.
* A backend that fails (an object store that is down, times out or refuses) raises
  :class:`~storage.errors.StorageIOError` naming the file's URL and the driver's error, once
  the driver's own retries are spent; a store never answers "absent" for "unreachable".
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import fsspec
from fsspec.core import url_to_fs
from fsspec.implementations.local import LocalFileSystem

from storage.errors import StorageError, StorageIOError

if TYPE_CHECKING:
    from storage.keys import Sealing

# Names starting with this prefix are in-flight (or crash-orphaned) temp files, never payload.
# Escaped components cannot start with "." so the prefix never collides with product names.
TEMP_PREFIX = ".tmp-"

# Object stores whose fsspec drivers cache listings: the cache is disabled so that a reader sees
# objects another process has just committed.
_OBJECT_STORES = frozenset(
    {"s3", "s3a", "gs", "gcs", "abfs", "abfss", "az", "adl", "oci", "oss", "r2"}
)
# Drivers known to implement pipe_file(mode="create") as a real create-if-absent.
_ATOMIC_CREATE = frozenset({"memory", "s3", "s3a"})

# S3 gives up in bounded time unless storage_options say otherwise. botocore's "standard"
# retry mode (3 attempts with jittered backoff, on throttling, 5xx and lost connections),
# and s3fs's own loop around each call (on timeouts and dropped connections) cut from 5
# rounds to S3_RETRIES. With s3fs's 5 s connect and 15 s read timeouts, a request to a
# refused endpoint fails in about 5 s and one to a silent endpoint in about 2 minutes
# (s3fs and botocore's own defaults: 7 s and 7 minutes; see docs/faults.md).
# `config_kwargs` (botocore's Config: retries, connect_timeout, read_timeout) and `retries`
# (s3fs's rounds) in storage_options replace these defaults.
_S3 = frozenset({"s3", "s3a"})
S3_CONFIG = {"retries": {"mode": "standard", "max_attempts": 3}}
S3_RETRIES = 2

# Driver errors that mean something to callers (there is or is no such file) pass through.
_MEANINGFUL = (FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError)

_SAFE_CHAR = re.compile(r"[A-Za-z0-9_-]")
_ESCAPED = re.compile(r"(?:[A-Za-z0-9_-]|%[0-9A-F]{2})+")


class Store:
    """A root URL plus storage_options; all paths are relative, '/'-separated."""

    def __init__(self, url: str, storage_options: dict | None = None) -> None:
        self.storage_options: dict = dict(storage_options or {})
        # seals the artifacts written and opens those read (storage.keys); never pickled:
        # a receiver rebuilds it from the store's own config and the KEK it is given
        self.sealing: Sealing | None = None
        chained = "::" in url
        if not chained and "://" not in url:
            # A bare path means local disk; resolve it now so workers in other cwds agree.
            url = "file://" + os.path.abspath(os.path.expanduser(url))
        options = dict(self.storage_options)
        scheme = "" if chained else url.split("://", 1)[0]
        if scheme in _OBJECT_STORES:
            options.setdefault("use_listings_cache", False)
        retries = None
        if scheme in _S3:
            options["config_kwargs"] = S3_CONFIG | (options.get("config_kwargs") or {})
            retries = int(options.pop("retries", S3_RETRIES))
            if retries != S3_RETRIES:  # not on the cached client that other stores share
                options["skip_instance_cache"] = True
        fs, root = url_to_fs(url, **options)
        if retries is not None:
            fs.retries = retries  # type: ignore[attr-defined]  # s3fs reads it per call
        self.fs: fsspec.AbstractFileSystem = fs
        self.root: str = root.rstrip("/") or root
        self._local = isinstance(fs, LocalFileSystem)
        # Canonical URL: rebuilding a Store from (url, storage_options) reaches the same place.
        self.url: str = url if chained else self.url_of("")

    def __repr__(self) -> str:
        # storage_options may hold credentials, so they are never shown.
        return f"Store({self.url!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebuild from URL and options on the receiving side instead of shipping a live client.
        return (Store, (self.url, self.storage_options))

    @property
    def protocol(self) -> str:
        """The driver's primary protocol name: "file", "memory", "s3", ..."""
        proto = self.fs.protocol
        return proto if isinstance(proto, str) else proto[0]

    @property
    def atomic_create(self) -> bool:
        """Whether an exclusive write is a real create-if-absent on this backend.

        True on local disk and on drivers that implement ``mode="create"`` (memory, s3).
        Elsewhere (gs, azure, ``::`` chains) two writers can both "create" a file, so the
        deletion journal and the processing lease, which count on it, refuse to run.
        """
        return self._local or self.protocol in _ATOMIC_CREATE

    def retention(self) -> dict[str, Any] | None:
        """What an object store keeps of deleted objects: ``{"bucket", "versioning"
        ("Enabled", "Suspended" or None), "object_lock" (bool)}``, read through the
        driver; None where the backend keeps no versions (local disk, memory) or where
        this driver cannot say."""
        if self.protocol not in _S3:
            return None
        bucket = self.root.split("/", 1)[0]
        call = self.fs.call_s3  # type: ignore[attr-defined]
        with self._io("read the bucket settings of", ""):
            versioning = call("get_bucket_versioning", Bucket=bucket).get("Status")
            try:
                lock = call("get_object_lock_configuration", Bucket=bucket)
            except Exception as exc:  # noqa: BLE001 - s3fs maps "no such configuration"
                if "ObjectLockConfiguration" not in f"{type(exc).__name__}{exc}":
                    raise
                lock = {}
        enabled = lock.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") == "Enabled"
        return {"bucket": bucket, "versioning": versioning, "object_lock": enabled}

    def delete_versions(self, rel: str, *, noncurrent: bool = False) -> int:
        """Delete every version and delete marker of the object at ``rel`` in a bucket
        that keeps versions (``noncurrent``: all but the current one); a version an object
        lock protects stays. Returns how many stay (0 where the backend keeps none)."""
        if self.protocol not in _S3:
            return 0
        bucket, _, key = self.path(rel).partition("/")
        call = self.fs.call_s3  # type: ignore[attr-defined]
        stayed = 0
        with self._io("delete the versions of", rel):
            for entry in self._versions_under(bucket, key):
                if entry["Key"] != key or (noncurrent and entry.get("IsLatest")):
                    continue
                try:
                    call("delete_object", Bucket=bucket, Key=key, VersionId=entry["VersionId"])
                except Exception:  # noqa: BLE001 - an object lock refuses: the audit reports it
                    stayed += 1
        self._invalidate(self.path(rel))
        return stayed

    def noncurrent_versions(self, rel: str = "") -> list[tuple[str, str]]:
        """(store-relative path, version ID) of every noncurrent version and delete
        marker below ``rel`` in a bucket that keeps versions; [] elsewhere."""
        if self.protocol not in _S3:
            return []
        bucket, _, key = self.path(rel).partition("/")
        root = self.root.partition("/")[2]
        lead = f"{root}/" if root else ""
        with self._io("list the versions of", rel):
            return [
                (entry["Key"][len(lead) :], entry["VersionId"])
                for entry in self._versions_under(bucket, key)
                if not entry.get("IsLatest", False) and entry["Key"].startswith(lead)
            ]

    def _versions_under(self, bucket: str, prefix: str) -> list[dict[str, Any]]:
        """Every version and delete marker whose key starts with ``prefix``."""
        call = self.fs.call_s3  # type: ignore[attr-defined]
        out: list[dict[str, Any]] = []
        marker: dict[str, str] = {}
        while True:
            page = call("list_object_versions", Bucket=bucket, Prefix=prefix, **marker)
            out += page.get("Versions", []) + page.get("DeleteMarkers", [])
            if not page.get("IsTruncated"):
                return out
            marker = {"KeyMarker": page["NextKeyMarker"],
                      "VersionIdMarker": page["NextVersionIdMarker"]}  # fmt: skip

    def require_atomic_create(self, what: str) -> None:
        if not self.atomic_create:
            raise StorageError(
                f"{self.url}: {what} needs an atomic create-if-absent, which this backend "
                f"({self.protocol}) does not offer through fsspec; use file://, memory:// "
                "or s3:// for the store"
            )

    def path(self, rel: str) -> str:
        """Return the fs-native path of ``rel``, refusing anything that could escape the root."""
        _check_rel(rel)
        if not rel:
            return self.root
        return f"{self.root.rstrip('/')}/{rel}"

    def url_of(self, rel: str) -> str:
        """Return a full URL for ``rel``, for error messages and reports."""
        path = self.path(rel)
        if self.protocol == "memory":
            return "memory://" + path.lstrip("/")
        return self.fs.unstrip_protocol(path)

    def write_bytes(self, rel: str, data: bytes, *, exclusive: bool = False) -> None:
        """Atomically write ``data`` at ``rel``, creating parent directories.

        With ``exclusive`` the write fails with FileExistsError instead of replacing an existing
        file; commit points (manifests, documents) use it so two writers can never both commit.
        On drivers without a native create-if-absent the check is best effort.
        """
        path = self.path(rel)
        if not rel:
            raise ValueError("cannot write to the store root itself")
        if self._local:
            try:
                _write_local(path, bytes(data), exclusive)
            except OSError as exc:
                if exc.errno not in _FULL:
                    raise
                # the OS names no file and no store: say both, and what to do
                raise StorageIOError(
                    f"{self.url_of(rel)}: could not write: {os.strerror(exc.errno)} "
                    f"(store {self.url}); nothing half-written was kept"
                ) from exc
            return
        if exclusive and self.exists(rel):
            raise FileExistsError(f"{self.url_of(rel)} already exists")
        try:
            with self._io("write", rel):
                if exclusive and self.protocol in _ATOMIC_CREATE:
                    self.fs.pipe_file(path, data, mode="create")
                else:
                    self.fs.pipe_file(path, data)
        finally:
            self._invalidate(path)

    def read_bytes(self, rel: str) -> bytes:
        """Return the raw bytes at ``rel``; FileNotFoundError if there is no such file."""
        path = self.path(rel)
        try:
            with self._io("read", rel):
                return bytes(self.fs.cat_file(path))
        except FileNotFoundError:
            raise FileNotFoundError(f"no file at {self.url_of(rel)}") from None

    def exists(self, rel: str) -> bool:
        """Whether a file or directory exists at ``rel``."""
        path = self.path(rel)
        self._invalidate(path)
        if self._local:
            return bool(self.fs.exists(path))
        # info, not exists: a driver's exists() may answer False for any error at all
        with self._io("look up", rel):
            try:
                self.fs.info(path)
            except FileNotFoundError:
                return False
        return True

    def listdir(self, rel: str = "") -> list[str]:
        """Sorted names of files and directories directly under ``rel``; [] if it is absent."""
        path = self.path(rel).rstrip("/")
        self._invalidate(path)
        try:
            with self._io("list", rel):
                entries = self.fs.ls(path, detail=False)
        except (FileNotFoundError, NotADirectoryError):
            return []
        names: set[str] = set()
        for entry in entries:
            entry = entry.rstrip("/")
            # Some drivers report the directory (or a file at `path`) as its own child.
            if entry == path or not entry.startswith(path + "/"):
                continue
            name = entry[len(path) + 1 :]
            if name and "/" not in name:
                names.add(name)
        return sorted(names)

    def versions(self, rel: str = "") -> dict[str, str]:
        """Files directly under ``rel`` -> a version stamp (size and modification time, or
        the object store's ETag) that changes when a file is replaced; {} if absent."""
        path = self.path(rel).rstrip("/")
        self._invalidate(path)
        try:
            with self._io("list", rel):
                entries = self.fs.ls(path, detail=True)
        except (FileNotFoundError, NotADirectoryError):
            return {}
        out = {}
        for entry in entries:
            name = entry["name"].rstrip("/")
            if entry.get("type") == "directory" or not name.startswith(path + "/"):
                continue
            stamp = next(
                (entry[k] for k in ("ETag", "etag", "md5Hash", "mtime", "LastModified", "created")
                 if entry.get(k) is not None),
                "",
            )  # fmt: skip
            out[name[len(path) + 1 :]] = f"{entry.get('size')}:{stamp}"
        return out

    def walk(self, rel: str = "") -> list[str]:
        """Sorted store-relative paths of all files below ``rel``; [] if it is absent.

        Results start with ``rel + "/"`` so they can be passed straight back to this Store.
        """
        path = self.path(rel).rstrip("/")
        lead = f"{rel}/" if rel else ""
        if self._local:  # os.walk: one scandir per directory, not one stat per entry
            found = []
            for d, dirs, files in os.walk(path, onerror=_raise_unless_missing):
                # A symlinked directory is listed, not entered (as fsspec lists it), so an
                # audit never passes on a tree that a link made to look complete.
                links = [x for x in dirs if os.path.islink(os.path.join(d, x))]
                dirs[:] = [x for x in dirs if x not in links]
                sub = d[len(path) + 1 :].replace(os.sep, "/")
                found += [f"{lead}{sub}/{f}" if sub else lead + f for f in files + links]
            return sorted(found)
        self._invalidate(path)
        try:
            with self._io("list", rel):
                found = self.fs.find(path, withdirs=False, detail=False)
        except FileNotFoundError:
            return []
        prefix = path + "/"
        return sorted(
            {lead + p[len(prefix) :] for p in found if p.startswith(prefix) and not p.endswith("/")}
        )

    def delete(self, rel: str) -> None:
        """Delete one file; a missing file is not an error (sweeps may race each other)."""
        path = self.path(rel)
        if not rel:
            raise ValueError("delete() takes a file; use delete_tree('') to empty the store")
        try:
            with contextlib.suppress(FileNotFoundError), self._io("delete", rel):
                self.fs.rm_file(path)
        finally:
            self._invalidate(path)

    def prune_empty_dirs(self, rel: str) -> None:
        """Remove empty directories below ``rel`` (local disk; object stores have none)."""
        if not self._local:
            return
        top = self.path(rel)
        for parent, _, _ in os.walk(top, topdown=False):  # children first
            if parent != top:
                with contextlib.suppress(OSError):  # not empty (or refilled): keep it
                    os.rmdir(parent)

    def delete_tree(self, rel: str) -> None:
        """Delete ``rel`` and everything below it; a missing tree is not an error."""
        path = self.path(rel)
        try:
            with self._io("delete", rel):
                self._delete_tree(path)
        finally:
            self._invalidate(path)

    def _delete_tree(self, path: str) -> None:
        if self.protocol in _OBJECT_STORES:
            # Directories are virtual here, so delete the objects themselves; a recursive
            # rm at a bucket root would also try to delete the bucket.
            self._invalidate(path)
            found = self.fs.find(path, withdirs=False, detail=False)
            inside = path.rstrip("/") + "/"
            files = [f for f in found if f == path or f.startswith(inside)]
            if files:
                self.fs.rm(files)
        else:
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm(path, recursive=True)

    @contextlib.contextmanager
    def _io(self, action: str, rel: str) -> Iterator[None]:
        """Raise a driver's failure as a StorageIOError that names the URL and the cause.

        Local disk raises OSErrors that name the path already; they pass unchanged, as do
        the errors callers act on (no such file, already exists).
        """
        try:
            yield
        except (*_MEANINGFUL, StorageError):
            raise
        except Exception as exc:
            if self._local:
                raise
            cause = f"{type(exc).__name__}: {exc}".splitlines()[0]
            raise StorageIOError(f"{self.url_of(rel)}: could not {action} ({cause})") from exc

    def _invalidate(self, path: str) -> None:
        """Drop cached listings for ``path`` so the next read asks the backend."""
        with contextlib.suppress(Exception):
            self.fs.invalidate_cache(path)


def _raise_unless_missing(error: OSError) -> None:
    """os.walk error hook: a tree removed mid-walk is empty; any other error is real."""
    if not isinstance(error, FileNotFoundError):
        raise error


def _check_rel(rel: str) -> None:
    """Reject relative paths that are ambiguous or could leave the store root."""
    if not isinstance(rel, str):
        raise TypeError(f"relative path must be str, not {type(rel).__name__}")
    if rel == "":
        return
    if "\\" in rel or "\x00" in rel:
        raise ValueError(f"relative path {rel!r} contains a backslash or NUL")
    if rel.startswith("/"):
        raise ValueError(f"relative path {rel!r} is absolute")
    if "://" in rel or "::" in rel:
        raise ValueError(f"relative path {rel!r} looks like a URL")
    for part in rel.split("/"):
        if part in ("", ".", ".."):
            raise ValueError(f"relative path {rel!r} has an empty, '.' or '..' component")


_FULL = (errno.ENOSPC, errno.EDQUOT)  # a full disk, or a full quota


def _write_local(path: str, data: bytes, exclusive: bool) -> None:
    """Temp file in the same directory, fsync, then rename (or hard-link when exclusive)."""
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    # Keep the target's name in the temp name for debugging, bounded to stay under NAME_MAX.
    tmp = os.path.join(parent, f"{TEMP_PREFIX}{uuid.uuid4().hex}-{os.path.basename(path)[:80]}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if exclusive:
            _publish_new(tmp, path)
        else:
            os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(parent)


def _publish_new(tmp: str, path: str) -> None:
    """Move ``tmp`` to ``path`` only if nothing is there; link() is atomic create-if-absent."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise FileExistsError(f"{path} already exists") from None
    except OSError:
        # Filesystems without hard links: reserve the name with O_EXCL (atomic), then move
        # the content over it. A reader may see the empty reservation for a moment.
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            raise FileExistsError(f"{path} already exists") from None
        try:
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(path)  # our own empty reservation
            raise
        return
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)


def _fsync_dir(directory: str) -> None:
    """Persist the rename itself; not every platform lets a directory be opened for fsync."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def escape_component(text: str) -> str:
    """Encode any string (e.g. a user ID) as exactly one safe path component.

    Only ``[A-Za-z0-9_-]`` pass through; every other character, including '.', '/', '%' and
    non-ASCII, becomes ``%XX`` per UTF-8 byte. The result can never be '', '.' or '..', and
    distinct inputs give distinct outputs.
    """
    if not isinstance(text, str):
        raise TypeError(f"component must be str, not {type(text).__name__}")
    if text == "":
        raise ValueError("cannot escape an empty string into a path component")
    out: list[str] = []
    for ch in text:
        if _SAFE_CHAR.fullmatch(ch):
            out.append(ch)
        else:
            out.extend(f"%{b:02X}" for b in ch.encode("utf-8"))
    return "".join(out)


def unescape_component(text: str) -> str:
    """Invert :func:`escape_component`; rejects anything it could not have produced."""
    if not isinstance(text, str) or not _ESCAPED.fullmatch(text):
        raise ValueError(f"{text!r} is not an escaped path component")
    raw = bytearray()
    i = 0
    while i < len(text):
        if text[i] == "%":
            raw.append(int(text[i + 1 : i + 3], 16))
            i += 3
        else:
            raw.extend(text[i].encode("ascii"))
            i += 1
    try:
        decoded = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{text!r} does not decode to UTF-8 text") from exc
    if escape_component(decoded) != text:
        raise ValueError(f"{text!r} is not in canonical escaped form")
    return decoded
