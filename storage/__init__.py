"""Durable, verifiable storage for sisa artifacts on local disk, in memory and on object stores.

``storage`` knows nothing about training; it offers a :class:`Store` (one URL plus options), a
commit protocol (payload files first, a self-verifying manifest last), and byte encodings for
weights, training state and arrays that never unpickle untrusted data.
"""

from storage.arrays import decode_arrays, encode_arrays
from storage.checkpoint import (
    decode_state,
    decode_weights,
    encode_state,
    encode_weights,
    state_hash,
    tensor_hashes,
)
from storage.commit import (
    MANIFEST,
    ArtifactWriter,
    CorruptArtifactError,
    DocumentExistsError,
    FileEntry,
    Manifest,
    StorageError,
    UncommittedArtifactError,
    UnknownFileError,
    canonical_json,
    is_committed,
    read_artifact,
    read_doc,
    read_file,
    read_manifest,
    replace_doc,
    sha256_hex,
    write_artifact,
    write_doc,
)
from storage.errors import StorageIOError
from storage.fs import TEMP_PREFIX, Store, escape_component, unescape_component
from storage.lease import Lease, LeaseHeldError

__all__ = [
    "MANIFEST",
    "TEMP_PREFIX",
    "ArtifactWriter",
    "CorruptArtifactError",
    "DocumentExistsError",
    "FileEntry",
    "Lease",
    "LeaseHeldError",
    "Manifest",
    "StorageError",
    "StorageIOError",
    "Store",
    "UncommittedArtifactError",
    "UnknownFileError",
    "canonical_json",
    "decode_arrays",
    "decode_state",
    "decode_weights",
    "encode_arrays",
    "encode_state",
    "encode_weights",
    "escape_component",
    "is_committed",
    "read_artifact",
    "read_doc",
    "read_file",
    "read_manifest",
    "replace_doc",
    "sha256_hex",
    "state_hash",
    "tensor_hashes",
    "unescape_component",
    "write_artifact",
    "write_doc",
]
