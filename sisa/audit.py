"""Audit a store: check from its files alone that every deletion it has receipted holds.

``audit`` reads the whole store once and proves, or reports the first evidence against:

1. **The receipt log is intact.** Every receipt's self-hash and its link to the one before
   are checked (``receipts.verify_chain``). A log whose tail was cut off or rewritten still
   links up, so pass ``expect_head``, the head hash you anchored outside the store after
   the last deletion; it must equal the head found. Each receipt must name its journaled
   request and the salted hashes of exactly that request's points, and no journaled
   request may lack a receipt while a later one has one (receipts are written in order).
2. **No live data holds a purged point.** The data every head references is read with its
   checksums verified, and the salted hash of each ID (and group) is compared with the
   tombstones and the receipted requests. Points of open requests are expected there
   until the next ``process``; they are counted as warnings.
3. **No live checkpoint was trained on a purged point.** Each stage's manifest records the
   hash of the ID set it trained on; it must equal the hash of the head's data IDs in
   slices 1..r, and the data holds no purged point (2). Stage r's parent must be stage
   r-1's state hash, recomputed from the verified weights.
4. **Nothing stale is left.** Every file under a shard (or the test data) must be
   referenced by that part's latest head, by the rule ``SisaStore.sweep`` purges with. A
   stale checkpoint put back after processing is an unreferenced artifact; so is what an
   interrupted batch left, until the next ``process`` sweeps it.
5. **Predictions ignore pending points.** Every served checkpoint is a stage of its
   shard's head, and a shard with open requests serves a stage before their earliest slice.
6. **No raw ID is left in metadata.** Every string in every JSON document (keys
   included), every integer-looking string read as an integer ID, and every integer or
   string array of any other ``.npz`` file is salted-hashed and compared with every
   deleted or requested point and group. JSON numbers are not compared: counters and
   sizes would collide with small integer IDs.

What it does not prove: that the weights are what training on the data produces. That is
``sisa.verify``, which retrains. An attacker who can rewrite the store can forge records
that agree with each other; the anchored head is what the store alone cannot fake.
Payload files are read once; small documents may be read again by the chain and serving
checks. Findings never name a raw ID, only salted-hash prefixes and counts.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from sisa import receipts, serving
from sisa.ids import fingerprints, salted_hash
from sisa.journal import Journal, Request, receipt_path
from sisa.partition import place
from sisa.store import (
    LOCKS,
    OWN_PATHS,
    SHARDS,
    STATE,
    TEST,
    TOMBSTONES,
    WEIGHTS,
    SisaStore,
    shard_prefix,
)
from storage import (
    MANIFEST,
    TEMP_PREFIX,
    StorageError,
    decode_arrays,
    decode_state,
    decode_weights,
    read_doc,
    read_file,
    read_manifest,
    state_hash,
)

TOMBS = TOMBSTONES + "/"
_HEAD = re.compile(r"^g(\d{6,})\.json$")
_JOURNAL = re.compile(r"^journal/r(\d{9})\.json$")
_INT = re.compile(r"^-?[1-9]\d{0,17}$|^0$")  # canonical int64 text: no sign on 0, no zeros


@dataclass(frozen=True)
class Finding:
    kind: str
    path: str  # store-relative
    detail: str
    severity: Literal["violation", "warning"] = "violation"


@dataclass
class AuditReport:
    chain: receipts.ChainReport
    findings: list[Finding]
    scanned_files: int
    requests: int
    open_requests: int

    @property
    def ok(self) -> bool:
        return self.chain.ok and not self.violations

    @property
    def violations(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "violation"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "chain": asdict(self.chain) | {"ok": self.chain.ok},
            "findings": [asdict(f) for f in self.findings],
            "scanned_files": self.scanned_files,
            "requests": self.requests,
            "open_requests": self.open_requests,
        }


def audit(
    url: str, storage_options: dict[str, Any] | None = None, *, expect_head: str | None = None
) -> AuditReport:
    """Check every promise the store's receipts make; see the module docstring."""
    store = SisaStore(url, storage_options)
    store.require_trained()
    return _Audit(store).run(expect_head)


@dataclass
class _Audit:
    store: SisaStore
    findings: list[Finding] = field(default_factory=list)
    docs: dict[str, Any] = field(default_factory=dict)  # rel -> body of every JSON document
    _hashes: dict[Any, str] = field(default_factory=dict)

    def flag(self, kind: str, path: str, detail: str, severity: str = "violation") -> None:
        self.findings.append(Finding(kind, path, detail, severity))  # type: ignore[arg-type]

    def hashes(self, values: Any) -> list[str]:
        """Salted hash of each ID or group value; each distinct value is hashed once."""
        for v in set(values) - self._hashes.keys():
            self._hashes[v] = salted_hash(self.salt, v)
        return [self._hashes[v] for v in values]

    def run(self, expect_head: str | None) -> AuditReport:
        store = self.store
        self.config, self.salt = store.config(), store.salt()
        files = store.fs.walk("")
        parts: dict[str, list[str]] = defaultdict(list)
        for rel in files:
            top, name = rel.split("/")[0], rel.rsplit("/", 1)[-1]
            if top not in OWN_PATHS:
                self.flag("foreign file", rel, "not written by a store", "warning")
            elif top in (SHARDS, TEST):
                parts["/".join(rel.split("/")[:2]) if top == SHARDS else TEST].append(rel)
            elif name.startswith(TEMP_PREFIX):
                self.flag("temp file", rel, "leftover of an interrupted write", "warning")
            elif rel.endswith(".json"):
                self.read_json(rel)
            elif rel.endswith(".npz"):
                self.check_npz(rel, store.fs.read_bytes(rel))
            else:
                self.flag("unexpected file", rel, "not a document of the store", "warning")
        for rel in [r for p in parts.values() for r in p if _HEAD.match(r.rsplit("/", 1)[-1])]:
            self.read_json(rel)
        self.load_requests()
        chain = self.check_receipts(expect_head)
        for rel, body in self.docs.items():
            self.check_strings(rel, body)
        heads = {}
        expected = {shard_prefix(k): k for k in range(self.config.sisa.shards)} | {TEST: None}
        for prefix in sorted(parts.keys() | (expected.keys() - {TEST})):
            if prefix not in expected:
                for rel in parts[prefix]:
                    self.flag("unreferenced artifact", rel, "not a part of this store")
                continue
            try:
                heads[prefix] = self.check_part(prefix, expected[prefix], parts[prefix])
            except (KeyError, TypeError, AttributeError) as err:
                self.flag("malformed document", prefix, f"head of {prefix}: {err!r}")
        self.check_serving(heads)
        return AuditReport(chain, self.findings, len(files), len(self.requests), len(self.open))

    def read_json(self, rel: str) -> None:
        try:
            if rel.startswith(LOCKS + "/"):  # a lease is plain JSON, rewritten by heartbeats
                self.docs[rel] = json.loads(self.store.fs.read_bytes(rel))
            else:
                self.docs[rel] = read_doc(self.store.fs, rel)  # verifies its self-hash
        except (StorageError, ValueError) as err:
            self.flag("tampered document", rel, str(err))

    def load_requests(self) -> None:
        """Requests from the journal; the hashes they and the tombstones make deleted."""
        self.requests: dict[int, Request] = {}
        for rel, body in self.docs.items():
            if m := _JOURNAL.match(rel):
                try:
                    request = Request.from_body(body)
                    assert request.seq == int(m.group(1)), "numbered as another request"
                    self.requests[request.seq] = request
                except (KeyError, TypeError, ValueError, AssertionError) as err:
                    self.flag("malformed document", rel, f"not a deletion request: {err!r}")
        self.receipted = Journal(self.store).receipted()
        done = set(self.receipted)
        self.open = [r for s, r in sorted(self.requests.items()) if s not in done]
        latest = max((r for r in self.docs if _HEAD.match(r.removeprefix(TOMBS))), default="")
        tombs = self.docs.get(latest) or {"entries": [], "groups": []}
        self.tombstoned = {e["hash"] for e in tombs["entries"]}
        self.deleted = self.tombstoned | {
            e.hash for s, r in self.requests.items() if s in done for e in r.entries
        }
        self.deleted_groups = set(tombs["groups"]) | {
            r.group for s, r in self.requests.items() if s in done and r.group
        }
        self.pending = {e.hash for r in self.open for e in r.entries} - self.deleted
        self.any_hash = self.deleted | self.deleted_groups | self.pending
        self.any_hash |= {r.group for r in self.open if r.group}

    def check_receipts(self, expect_head: str | None) -> receipts.ChainReport:
        chain = receipts.verify_chain(self.store, self.receipted)
        for problem in chain.problems:
            self.flag("broken receipt chain", "receipts", problem)
        if expect_head is not None and expect_head.strip().lower() != chain.head:
            detail = f"chain head differs from the anchored one (found {chain.head})"
            self.flag("broken receipt chain", "receipts", detail)
        for seq in self.receipted:
            body, request = self.docs.get(receipt_path(seq)), self.requests.get(seq)
            if body is None:
                continue  # unreadable: reported as tampered
            if request is None:
                self.flag("receipt without request", receipt_path(seq), "no journaled request")
            elif (body.get("request"), body.get("ids"), body.get("group")) != (
                request.id,
                sorted(e.hash for e in request.entries),
                request.group,
            ):
                self.flag("receipt differs from request", receipt_path(seq), f"request {seq}")
            elif not {e.hash for e in request.entries} <= self.tombstoned:
                self.flag("missing tombstone", receipt_path(seq), "purged points not tombstoned")
        last = max(self.receipted, default=0)
        for request in self.open:
            if request.seq < last:
                detail = f"request {request.seq} has no receipt, but request {last} has one"
                self.flag("missing receipt", receipt_path(request.seq), detail)
        return chain

    def check_strings(self, rel: str, doc: Any) -> None:
        strings: set[str] = set()
        stack = [doc]
        while stack:
            node = stack.pop()
            if isinstance(node, dict):
                strings.update(node)
                stack.extend(node.values())
            elif isinstance(node, list):
                stack.extend(node)
            elif isinstance(node, str):
                strings.add(node)
        values = list(strings) + [int(s) for s in strings if _INT.match(s)]
        hits = sum(h in self.any_hash for h in self.hashes(values))
        if hits:
            self.flag("raw deleted ID in a document", rel, f"{hits} deleted or requested ID(s)")

    def check_npz(self, rel: str, data: bytes) -> int:
        """Deleted points in an npz outside live data; flags them and returns how many."""
        try:
            arrays = decode_arrays(data)
        except ValueError as err:
            self.flag("unexpected file", rel, str(err), "warning")
            return 0
        if "ids" in arrays:  # the data layout: only ids and groups hold identifiers
            arrays = {k: arrays[k] for k in ("ids", "groups") if k in arrays}
        values = [v for a in arrays.values() if a.dtype.kind in "iuU" for v in a.ravel().tolist()]
        hits = sum(h in self.any_hash for h in self.hashes(values))
        if hits and not rel.startswith((SHARDS + "/", TEST + "/")):
            self.flag("deleted point in a file", rel, f"{hits} deleted or requested ID(s)")
        return hits

    def check_part(self, prefix: str, shard: int | None, files: list[str]) -> dict | None:
        """One shard (or the test data): its latest head, what it references, the rest."""
        gens = [int(m.group(1)) for r in files if (m := _HEAD.match(r[len(prefix) + 1 :]))]
        head_rel = f"{prefix}/g{max(gens):06d}.json" if gens else None
        head = self.docs.get(head_rel) if head_rel else None
        if head is None:
            if shard is not None or files:
                self.flag("missing head", prefix, "no readable committed head; part not audited")
            return None
        refs = [head["data"]] + head.get("stages", [])
        listed = {}
        for ref in refs:
            if not ref["dir"].startswith(prefix + "/"):
                self.flag("foreign reference", head_rel, f"{ref['dir']} is not under {prefix}")
            listed[ref["dir"] + "/"] = self.manifest(ref, head_rel)
        for rel in files:
            folder = next((d for d in listed if rel.startswith(d)), None)
            name = rel.rsplit("/", 1)[-1]
            if rel == head_rel:
                continue
            if folder is None:
                hits = self.check_npz(rel, self.store.fs.read_bytes(rel)) if ".npz" in rel else 0
                held = f"; it holds {hits} deleted point(s)" if hits else ""
                self.flag("unreferenced artifact", rel, f"not referenced by {head_rel}{held}")
            elif name.startswith(TEMP_PREFIX):
                self.flag("temp file", rel, "leftover inside a live artifact", "warning")
            elif listed[folder] and name != MANIFEST and name not in listed[folder].files:
                self.flag("unlisted file", rel, "in a live artifact but not in its manifest")
        slice_of = self.check_data(prefix, shard, head, listed[head["data"]["dir"] + "/"])
        if shard is not None and slice_of is not None:
            self.check_stages(prefix, head, slice_of, listed)
        return head

    def manifest(self, ref: dict, head_rel: str) -> Any:
        try:
            manifest = read_manifest(self.store.fs, ref["dir"])
        except StorageError as err:
            self.flag("corrupt artifact", ref["dir"], str(err))
            return None
        if manifest.sha256 != ref["manifest"]:
            self.flag("corrupt artifact", ref["dir"], f"manifest is not the one {head_rel} names")
            return None
        self.check_strings(f"{ref['dir']}/{MANIFEST}", manifest.meta)
        return manifest

    def check_data(self, prefix: str, shard: int | None, head: dict, manifest: Any):
        """Verify the part's data; return each point's slice, with its IDs' fingerprints."""
        rel = head["data"]["dir"]
        if manifest is None:
            return None  # reported with the manifest
        try:
            files = {n: read_file(self.store.fs, rel, n, manifest) for n in manifest.files}
            arrays = decode_arrays(files["ids.npz"])
        except (KeyError, StorageError, ValueError) as err:
            self.flag("corrupt data", rel, repr(err))
            return None
        ids, groups = arrays["ids"], arrays.get("groups")
        hashes = self.hashes(ids.tolist())
        dead = sum(h in self.deleted for h in hashes)
        if groups is not None:
            dead += sum(h in self.deleted_groups for h in self.hashes(groups.tolist()))
        if dead:
            self.flag("deleted point in live data", rel, f"{dead} purged point(s) or group(s)")
        if pending := sum(h in self.pending for h in hashes):
            self.flag("pending deletion", rel, f"{pending} point(s) of open requests", "warning")
        if len(ids) != head["n"]:
            self.flag("corrupt data", rel, f"holds {len(ids)} points, its head says {head['n']}")
        if shard is None:
            return None
        shard_of, slice_of = place(self.config.sisa, ids, arrays["y"], groups)
        if (shard_of != shard).any():
            self.flag("corrupt data", rel, f"holds points of shards other than {shard}")
        return slice_of, fingerprints(ids)

    def check_stages(self, prefix: str, head: dict, data: tuple, listed: dict) -> None:
        slice_of, fps = data
        parent, stages = None, head["stages"]
        if len(stages) != self.config.sisa.slices:
            self.flag("corrupt checkpoint", prefix, f"head lists {len(stages)} stages")
        for r, ref in enumerate(stages, 1):
            rel, manifest = ref["dir"], listed[ref["dir"] + "/"]
            if manifest is None:  # reported with the manifest
                parent = ref.get("state_hash")
                continue
            try:
                weights = decode_weights(read_file(self.store.fs, rel, WEIGHTS, manifest))
                decode_state(read_file(self.store.fs, rel, STATE, manifest))
                meta = manifest.meta
            except (StorageError, ValueError) as err:
                self.flag("corrupt checkpoint", rel, repr(err))
                parent = ref.get("state_hash")
                continue
            # the hash of the ID set stage r trained on, as sisa.ids.id_set_hash computes it
            trained_on = hashlib.sha256(np.sort(fps[slice_of < r]).tobytes()).hexdigest()
            if not meta.get("ids_hash") == ref.get("ids_hash") == trained_on:
                self.flag("checkpoint trained on other points", rel, f"stage {r} of {prefix}")
            if (meta.get("stage"), meta.get("parent")) != (r, parent):
                self.flag("broken lineage", rel, f"not stage {r} continuing stage {r - 1}")
            parent = state_hash(weights)
            if not meta.get("state_hash") == ref.get("state_hash") == parent:
                self.flag("corrupt checkpoint", rel, "state hash differs from the weights")
            if meta.get("training_hash") != self.config.training_hash():
                self.flag("corrupt checkpoint", rel, "trained under another config")

    def check_serving(self, heads: dict[str, dict | None]) -> None:
        try:
            state = serving.current(self.store)
        except (KeyError, StorageError, TypeError, ValueError) as err:
            self.flag("unreadable serving state", "serving", repr(err))
            return
        for k in range(self.config.sisa.shards):
            head, served = heads.get(shard_prefix(k)), state.shards.get(k)
            if head is None:
                continue
            if served is None:
                self.flag("shard not served", "serving", f"shard {k} has no serving entry")
                continue
            ref = served.ref
            if ref is not None and not any(
                (s["dir"], s["manifest"]) == (ref.get("dir"), ref.get("manifest"))
                for s in head["stages"]
            ):
                self.flag("serving a stale checkpoint", "serving", f"shard {k}: {ref.get('dir')}")
            applied = int(head.get("journal_seq", 0))
            held = [s for r in self.open if r.seq > applied for s in r.slices(k)]
            stage = ref.get("stage", 0) if ref is not None else 0
            if held and stage > min(held):
                detail = f"shard {k} serves stage {stage}, trained on a pending point"
                self.flag("serving a pending point", "serving", detail)
