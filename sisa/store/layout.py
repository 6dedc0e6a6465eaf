"""Every path of a SISA store, in one place. No other module spells a path of the layout.

```
config.json                    training intent: config + training hash (written first)
STORE.json                     the trained marker: fingerprint, shapes, salt (written last)
shards/00003/g000002.json      head of shard 3, generation 2: its data and stage checkpoints
shards/00003/g000002/data/     artifact: ids.npz (ids, labels, groups), X.npz (features)
                               or, as ingested in chunks, X-00000.npz, X-00001.npz, ...
shards/00003/g000002/stage-004/ artifact: weights.safetensors, state.pt
test/g000001.json              head of the held-out test data; test/g000001/data/
tombstones/g000005.json        salted hashes of every deleted ID and group
journal/r000000007.json        deletion request 7: salted hashes, shard and slice of each
batches/b000000007.json        the plan of the batch that processes requests up to 7
batches/g000004.json           the batch log: the newest plan and its receipts, fenced
serving/g000012.json           the checkpoint each shard serves (rolled back while pending)
receipts/r000000007.json       receipt of request 7, chained to receipt 6 by hash
audits/g000003.json            the last audit's verdict (metrics and the dashboard read it)
locks/process/l000000004.json  lease of the one process that retrains (its fencing token)
```

Paths are built from integers (shard, generation, stage, sequence number), each formatted
with a fixed width, or from random hex tokens, so no ID or user string ever becomes a path.

A *part* is where a point lives: a shard ``0..S-1``, or ``TEST_PART`` for the held-out
test data. Its *prefix* is the folder of its heads.
"""

from __future__ import annotations

import re

from storage import MANIFEST

STORE_DOC = "STORE.json"
CONFIG_DOC = "config.json"
TEST_PREFIX = "test"
TOMBSTONES = "tombstones"
SHARDS = "shards"
JOURNAL = "journal"  # deletion requests, one write-once document each
BATCHES = "batches"  # the plan of each batch of requests, written before it runs
SERVING = "serving"  # which checkpoint of each shard predictions use
RECEIPTS = "receipts"  # one per processed request, chained by hash
LOCKS = "locks"
AUDITS = "audits"  # the verdicts of the last audits
SALT_FOLDER = "salt"  # in an encrypted store's key store: the key of its ID hashes
PROCESS_LOCK = f"{LOCKS}/process"  # the lease of the one process that retrains
OWN_PATHS = (
    CONFIG_DOC,
    STORE_DOC,
    SHARDS,
    TEST_PREFIX,
    TOMBSTONES,
    JOURNAL,
    BATCHES,
    SERVING,
    RECEIPTS,
    LOCKS,
    AUDITS,
)  # all a store ever writes; fmt: skip
WEIGHTS, STATE = "weights.safetensors", "state.pt"
STAGE_FILES = (MANIFEST, WEIGHTS, STATE)
IDS_FILE = "ids.npz"  # a data artifact's IDs, labels and groups
DEFAULT_X_FILES = ("X.npz",)  # the features of a data artifact written in one piece
PROBE_PREFIX = f"{LOCKS}/probe-"  # a node's check that it sees the same disk (then deleted)

TEST_PART = -1  # the part of a held-out point; shards are 0..S-1

HEAD_NAME = re.compile(r"^g([0-9]{6,})\.json\Z")  # a head document in its prefix
REQUEST_NAME = re.compile(r"^r([0-9]{9})\.json\Z")  # a journal entry or a receipt
BATCH_NAME = re.compile(r"^b([0-9]{9})\.json\Z")


def shard_prefix(shard: int) -> str:
    return f"{SHARDS}/{shard:05d}"


def part_prefix(part: int) -> str:
    """The prefix of a shard's heads, or of the test data's for ``TEST_PART``."""
    return TEST_PREFIX if part == TEST_PART else shard_prefix(part)


def gen_dir(prefix: str, generation: int) -> str:
    """The folder of one generation's artifacts."""
    return f"{prefix}/g{generation:06d}"


def head_path(prefix: str, generation: int) -> str:
    """The head document of one generation: writing it commits the generation."""
    return f"{gen_dir(prefix, generation)}.json"


def data_dir(prefix: str, generation: int) -> str:
    return f"{gen_dir(prefix, generation)}/data"


def stage_dir(prefix: str, generation: int, stage: int) -> str:
    """The checkpoint after ``stage`` slices (1-based), written by that generation."""
    return f"{gen_dir(prefix, generation)}/stage-{stage:03d}"


def x_file(chunk: int) -> str:
    """The features of one chunk of a data artifact ingested in chunks."""
    return f"X-{chunk:05d}.npz"


def request_path(seq: int) -> str:
    return f"{JOURNAL}/r{seq:09d}.json"


def request_seq(rel: str) -> int | None:
    """The sequence number of the journal entry at ``rel``; None for any other path."""
    folder, _, name = rel.rpartition("/")
    match = REQUEST_NAME.match(name) if folder == JOURNAL else None
    return int(match.group(1)) if match else None


def receipt_path(seq: int) -> str:
    return f"{RECEIPTS}/r{seq:09d}.json"


def batch_path(through: int) -> str:
    return f"{BATCHES}/b{through:09d}.json"
