"""The storage layer's errors, in one place so every module (and caller) shares them."""

from __future__ import annotations


class StorageError(Exception):
    """Base class for storage failures callers may want to handle as one."""


class StorageIOError(StorageError, OSError):
    """The backend failed a read, write, listing or delete: unreachable, timed out, refused.

    Raised once the driver's own retries are spent. The message names the store URL of
    the file and the driver's error; the driver's exception is the ``__cause__``. A failed
    write never leaves a half-written commit: a payload or manifest either landed whole
    (a single PUT, or a rename on disk) or not at all, and an artifact without its
    manifest is garbage that ``sweep`` removes. Whether an object write whose response
    was lost landed is unknown; rerunning the operation resolves it (resumable jobs reuse
    a stage that did commit).
    """
