"""Audit a store: check, from its files alone, that every deletion it receipted holds.

``audit`` reads the whole store once and reports any evidence against these claims:

1. **The receipt log is intact.** Each receipt's self-hash and its link to the one before
   are checked (``receipts.verify_chain``). A log whose tail was cut off or rewritten
   still links up, so pass ``expect_head``: the head hash you anchored outside the store
   after the last deletion. Each receipt must name its journaled request and exactly the
   salted hashes of that request's points, which the tombstones must hold (they keep a
   forgotten point from coming back). No journaled request may lack a receipt while a
   later one has one: receipts are written in order.
2. **No live data holds a purged point.** The data each head references is read with its
   checksums verified, and the salted hash of every ID (and group) is compared with the
   tombstones and the receipted requests. Points of open requests are expected there until
   the next ``process``; they are counted as "pending deletion" warnings.
3. **No live checkpoint was trained on a purged point.** A stage's manifest records the
   hash of the ID set it trained on. It must equal the hash of the head's data IDs in
   slices 1..r, and that data holds no purged point (claim 2). Stage r's parent must be
   the state hash of stage r-1, recomputed from its verified weights.
4. **Nothing stale is left.** Every file under a shard or the test data must be referenced
   by that part's latest head (the rule ``SisaStore.sweep`` purges by). A stale checkpoint
   put back after processing is an "unreferenced artifact", and so is what an interrupted
   batch left behind, until the next ``process`` sweeps it. A file inside a live artifact
   that its manifest does not list is a violation too: the sweep would keep it.
5. **Predictions ignore pending points.** Each served checkpoint is a stage of its shard's
   head, and a shard with open requests serves a stage before their earliest slice.
6. **No raw ID is left in metadata.** Every string value in every JSON document (and, read
   as an integer ID, every string that spells an integer), and every integer or string
   array of any other ``.npz`` file, is salted-hashed and compared with every deleted or
   requested point and group. JSON numbers and keys are not compared: counters, sizes and
   shard numbers would collide with small integer IDs.

7. **Nothing purged can be opened again** (``sisa.evidence.retention``). In an encrypted
   store every data key opens a live artifact and every live artifact has its key; in a
   bucket that keeps versions, each noncurrent version of an artifact file is sealed
   under a destroyed key.

What the audit does not prove: that the weights are what training on the data produces.
``sisa.evidence.verify`` proves that by retraining. Someone who can rewrite the store can forge
records that agree with each other; only the anchored head is out of their reach.
An audit that runs while a process holds the store's lease may see its work half done.
Payload files are read once; small documents may be read again by the chain and serving
checks. Findings never name a raw ID: they give counts.
"""

from __future__ import annotations

import logging
import re
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

import storage
from sisa.data.partition import place
from sisa.deletion import compliance, receipts
from sisa.deletion.plan import BatchPlan, unfinished_batch
from sisa.evidence.retention import retention_findings
from sisa.ids import fingerprint_set_hash, fingerprints, id_candidates, salted_hash
from sisa.store.artifacts import Head, SisaStore, StorageOptions, open_store
from sisa.store.journal import Journal, Request
from sisa.store.layout import (
    AUDITS,
    CONFIG_DOC,
    HEAD_NAME,
    IDS_FILE,
    LOCKS,
    OWN_PATHS,
    PROCESS_LOCK,
    SHARDS,
    STATE,
    TEST_PREFIX,
    TOMBSTONES,
    WEIGHTS,
    batch_path,
    head_path,
    receipt_path,
    request_seq,
    shard_prefix,
)
from sisa.store.records import DataRef, StageRef
from sisa.store.tombstones import legacy_groups
from storage import MANIFEST, TEMP_PREFIX, DocumentExistsError, StorageError
from storage.crypto import is_sealed

log = logging.getLogger(__name__)
TOMBS = TOMBSTONES + "/"
_INT = re.compile(r"^(-?[1-9][0-9]{0,17}|0)\Z")  # an integer as str() writes it, within int64


@dataclass(frozen=True, kw_only=True)
class Finding:
    kind: str
    path: str  # store-relative
    detail: str
    severity: Literal["violation", "warning"] = "violation"


@dataclass(kw_only=True)
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
        return asdict(self) | {"ok": self.ok, "chain": asdict(self.chain) | {"ok": self.chain.ok}}


def audit(
    store: SisaStore | str,
    storage_options: StorageOptions = None,
    *,
    expect_head: str | None = None,
    record: bool = True,
) -> AuditReport:
    """Check the claims of the module docstring on ``store`` (a ``SisaStore`` or a URL).

    With ``record``, the verdict is kept in the store (``audits/``), where metrics and the
    dashboard read the last one: whether it passed, when, how many findings of which
    kinds, and the receipt chain's head. Paths and details stay in the report."""
    store = open_store(store, storage_options)
    store.require_trained()
    report = _Audit(store=store).run(expect_head)
    if record:
        _record(store, report)
    return report


KEEP_AUDITS = 2  # a reader that listed just before a write still finds the one it chose


def _record(store: SisaStore, report: AuditReport) -> None:
    """Keep the verdict as the newest generation of ``audits/``; a store that cannot be
    written to now (read-only credentials, an outage) keeps its last one, with a warning."""
    body = {
        "ok": report.ok,
        "at": time.time(),
        "violations": len(report.violations) + len(report.chain.problems),
        "warnings": len(report.findings) - len(report.violations),
        "kinds": sorted(
            {f.kind for f in report.findings}
            | ({"broken receipt chain"} if report.chain.problems else set())
        ),
        "chain": {"ok": report.chain.ok, "length": report.chain.length, "head": report.chain.head},
    }
    try:
        for _ in range(8):  # another audit may take the same generation: take the next
            try:
                store.commit_next(AUDITS, body, keep=KEEP_AUDITS)
            except DocumentExistsError:
                continue
            return
    except (StorageError, OSError) as err:
        log.warning("could not record the audit in %s: %s", store.url, err)


def last_audit(store: SisaStore) -> dict[str, Any] | None:
    """The newest recorded audit verdict (``audit(record=True)``), or None."""
    head = store.latest_head(AUDITS)
    return None if head is None else head.body


@dataclass(kw_only=True)
class _Audit:
    store: SisaStore
    findings: list[Finding] = field(default_factory=list)
    docs: dict[str, Any] = field(default_factory=dict)  # path -> body of each JSON document
    known: dict[Any, str] = field(default_factory=dict)  # ID or group -> salted hash
    labels_seen: set[int] = field(default_factory=set)  # classes of the live data

    def flag(self, kind: str, path: str, detail: str, severity: str = "violation") -> None:
        self.findings.append(Finding(kind=kind, path=path, detail=detail, severity=severity))  # type: ignore[arg-type]

    def hashes(self, values: list[Any]) -> list[str]:
        for value in set(values) - self.known.keys():  # each distinct value hashed once
            self.known[value] = salted_hash(self.salt, value)
        return [self.known[v] for v in values]

    def run(self, expect_head: str | None) -> AuditReport:
        self.config, self.salt = self.store.config(), self.store.salt()
        files = self.store.files()
        parts: dict[str, list[str]] = defaultdict(list)
        npz = []
        lease_seen = False
        for rel in files:
            top, name = rel.split("/")[0], rel.rsplit("/", 1)[-1]
            if top not in OWN_PATHS:
                self.flag("foreign file", rel, "not written by a store", "warning")
            elif top in (SHARDS, TEST_PREFIX):
                parts["/".join(rel.split("/")[:2]) if top == SHARDS else TEST_PREFIX].append(rel)
                if HEAD_NAME.match(name):
                    self.read_json(rel)
            elif name.startswith(TEMP_PREFIX):
                self.flag("temp file", rel, "left by an interrupted write", "warning")
            elif rel.startswith(f"{PROCESS_LOCK}/") or rel == f"{PROCESS_LOCK}.json":
                # the lease, its past holders, and the file of an older version's lease
                if not lease_seen and self.store.lease(PROCESS_LOCK, 600).holder() is not None:
                    self.flag("store in use", PROCESS_LOCK, "findings may be transient", "warning")
                lease_seen = True
            elif top == LOCKS:  # a node's disk probe
                self.flag("store in use", rel, "findings may be transient", "warning")
            elif rel.endswith(".json"):
                self.read_json(rel)
            elif rel.endswith(".npz"):
                npz.append(rel)
            else:
                self.flag("unexpected file", rel, "not a document of the store", "warning")
        self.load_requests()
        self.unfinished = self.load_unfinished_batch()
        chain = self.check_receipts(expect_head)
        for rel, body in self.docs.items():
            self.check_strings(rel, body)
        for rel in npz:
            if hits := self.npz_hits(rel):
                self.flag("deleted point in a file", rel, f"{hits} deleted or requested ID(s)")
        expected = {shard_prefix(k): k for k in range(self.config.sisa.shards)}
        heads = {}
        for prefix in sorted(parts.keys() | expected.keys()):
            if prefix not in expected and prefix != TEST_PREFIX:
                for rel in parts[prefix]:
                    self.flag("unreferenced artifact", rel, "not a part of this store")
                continue
            try:
                heads[prefix] = self.check_part(prefix, expected.get(prefix), parts[prefix])
            except (KeyError, TypeError, AttributeError, ValueError) as err:
                self.flag("malformed document", prefix, f"the head of {prefix}: {err!r}")
        self.check_classes()
        if self.stale_groups:
            detail = (
                f"{len(self.stale_groups)} tombstoned group(s) still have live points: an "
                "earlier version tombstoned the group of every deleted point; "
                "'sisa repair --store URL' drops these group tombstones"
            )
            self.flag("stale group tombstone", TOMBSTONES, detail, "warning")
        try:
            self.check_serving(heads)
        except (KeyError, StorageError, TypeError, ValueError) as err:
            self.flag("unreadable serving state", "serving", repr(err))
        unfinished = self.unfinished is not None
        for kind, rel, detail, severity in retention_findings(self.store, heads, unfinished):
            self.flag(kind, rel, detail, severity)  # keys and kept versions (claim 7)
        return AuditReport(
            chain=chain,
            findings=self.findings,
            scanned_files=len(files),
            requests=len(self.requests),
            open_requests=len(self.open),
        )

    def check_classes(self) -> None:
        """Class names recorded from the data that no remaining point carries: the name of
        a class whose last point was forgotten stays in the vocabulary (it fixes the output
        size), and a name can identify a person. Declared ``data.classes`` are meant."""
        names = self.store.classes()
        if names is None or self.config.data.classes is not None:
            return
        unused = [name for i, name in enumerate(names) if i not in self.labels_seen]
        if unused:
            shown = ", ".join(repr(n) for n in unused[:10])
            detail = (
                f"{len(unused)} class name(s) recorded from the data have no remaining point: "
                f"{shown}. The vocabulary keeps them (a deletion never changes it); if a name "
                "could identify a person, retrain with data.classes declared (docs/design.md)"
            )
            self.flag("class without points", CONFIG_DOC, detail, "warning")

    def read_json(self, rel: str) -> None:
        try:
            self.docs[rel] = self.store.read_doc(rel)  # checks its self-hash
        except (StorageError, ValueError) as err:
            self.flag("tampered document", rel, str(err))

    def load_requests(self) -> None:
        """The journal's requests, and which hashes are purged or pending."""
        self.requests: dict[int, Request] = {}
        for rel, body in self.docs.items():
            if (seq := request_seq(rel)) is not None:
                try:
                    request = Request.from_body(body)
                    if request.seq != seq:
                        raise ValueError(f"it says it is request {request.seq}")
                    self.requests[request.seq] = request
                except (KeyError, TypeError, ValueError) as err:
                    self.flag("malformed document", rel, f"not a deletion request: {err!r}")
        self.voided = {r.voids for r in self.requests.values() if r.voids is not None}
        self.unreadable: set[int] = set()  # journal entries that are damaged (or voided)
        for i, f in enumerate(self.findings):  # a damaged entry stands until it is voided
            seq = request_seq(f.path)
            if seq is not None and f.kind in ("tampered document", "malformed document"):
                self.unreadable.add(seq)
                if seq in self.voided:
                    self.findings[i] = Finding(
                        kind="voided journal entry",
                        path=f.path,
                        detail=f.detail,
                        severity="warning",
                    )
                else:
                    detail = f"{f.detail}; its request cannot be processed: resubmit it, then "
                    detail += "'sisa void' the entry"
                    self.findings[i] = Finding(
                        kind="damaged journal entry", path=f.path, detail=detail
                    )
        self.receipted = Journal(self.store).receipted()
        receipted = set(self.receipted)
        done = [r for s, r in sorted(self.requests.items()) if s in receipted]
        self.open = [r for s, r in sorted(self.requests.items()) if s not in receipted]
        heads = [(r, HEAD_NAME.match(r[len(TOMBS) :])) for r in self.docs if r.startswith(TOMBS)]
        gens = {int(m.group(1)): r for r, m in heads if m}
        latest = gens[max(gens)] if gens else ""
        tombs = self.docs.get(latest, {"entries": [], "groups": []})
        try:
            self.tombstoned, groups = {e["hash"] for e in tombs["entries"]}, set(tombs["groups"])
            self.legacy = legacy_groups(tombs)
        except (KeyError, TypeError) as err:
            self.flag("malformed document", latest, repr(err))
            self.tombstoned, groups, self.legacy = set(), set(), set()
        self.deleted = self.tombstoned | {e.hash for r in done for e in r.entries}
        self.requested_groups = {r.group for r in done if r.group}
        self.deleted_groups = groups | self.requested_groups
        self.stale_groups: set[str] = set()  # legacy group tombstones with live points
        self.pending = {e.hash for r in self.open for e in r.entries} - self.deleted
        self.everything = self.deleted | self.deleted_groups | self.pending
        self.everything |= {r.group for r in self.open if r.group}

    def load_unfinished_batch(self) -> BatchPlan | None:
        """The plan of a batch that has started and not finished (a failure or a crash cut
        it short, or a process runs now): its leftovers are expected until it resumes."""
        try:
            plan = unfinished_batch(self.store, Journal(self.store))
        except (KeyError, TypeError, ValueError, StorageError) as err:
            self.flag("malformed document", "batches", f"the newest batch plan: {err!r}")
            return None
        if plan is not None:
            detail = (
                f"requests {plan.seqs[0]}..{plan.seqs[-1]} are being processed; "
                "'sisa process' resumes the batch, and its leftovers are warnings until then"
            )
            self.flag("unfinished batch", batch_path(plan.through), detail, "warning")
        return plan

    def check_receipts(self, expect_head: str | None) -> receipts.ChainReport:
        unreadable = frozenset(self.unreadable)
        chain = receipts.verify_chain(self.store, self.receipted, unreadable)  # problems: chain
        if expect_head is not None and expect_head.strip().lower() != chain.head:
            detail = f"chain head differs from the anchored one (found {chain.head})"
            self.flag("broken receipt chain", "receipts", detail)
        for seq in self.receipted:
            rel, request = receipt_path(seq), self.requests.get(seq)
            body = self.docs.get(rel)
            if body is None:
                continue  # reported as tampered
            if request is None:
                if seq not in self.voided:  # a voided entry's receipt has lost its request
                    self.flag("receipt without request", rel, f"request {seq} is not journaled")
                continue
            hashes = sorted(e.hash for e in request.entries)
            claimed = (body.get("request"), body.get("ids"), body.get("group"))
            if claimed != (request.id, hashes, request.group):
                self.flag("receipt differs from its request", rel, f"request {seq}")
            if not set(hashes) <= self.tombstoned:
                self.flag("missing tombstone", rel, f"points of request {seq} not tombstoned")
        last = max(self.receipted, default=0)
        for request in self.open:
            if request.seq < last:
                detail = f"request {request.seq} has no receipt, but request {last} has one"
                self.flag("missing receipt", receipt_path(request.seq), detail)
        return chain

    def check_strings(self, rel: str, doc: Any) -> None:
        strings, stack, texts = set(), [doc], []
        while stack:
            node = stack.pop()
            if isinstance(node, dict):
                stack.extend(node.values())
                if isinstance(node.get("reason"), str):  # free text: IDs may hide inside
                    texts.append(node["reason"])
            elif isinstance(node, list):
                stack.extend(node)
            elif isinstance(node, str):
                strings.add(node)
        values = [*strings, *(int(s) for s in strings if _INT.match(s))]
        values += [v for text in texts for v in id_candidates(text)]
        if hits := sum(h in self.everything for h in self.hashes(values)):
            self.flag("raw deleted ID in a document", rel, f"{hits} deleted or requested ID(s)")

    def left_by_batch(self, prefix: str, rel: str, head_generation: int) -> bool:
        """Whether ``rel`` is what the unfinished batch writes or replaces in this part: a
        generation at or after the one it replaces (sweeping is its last step but one)."""
        plan = self.unfinished
        match = re.match(rf"^{re.escape(prefix)}/g([0-9]{{6,}})(/|\.json\Z)", rel)
        if plan is None or match is None:
            return False
        generation = int(match.group(1))
        if prefix == TEST_PREFIX:
            return plan.test_removed > 0 and generation >= head_generation - 1
        replaced = {shard_prefix(s.shard): s.generation for s in plan.shards}
        return prefix in replaced and generation >= replaced[prefix]

    def npz_hits(self, rel: str, among: set[str] | None = None) -> int:
        """How many deleted or requested IDs (or IDs ``among`` these) an .npz file outside
        live data holds."""
        raw = self.store.read_bytes(rel)
        if is_sealed(raw):  # a sealed file outside live data: its place is what is flagged
            return 0
        try:
            arrays = storage.decode_arrays(raw)
        except ValueError as err:
            self.flag("unexpected file", rel, str(err), "warning")
            return 0
        if "ids" in arrays:  # the data layout: labels and features are not identifiers
            arrays = {k: arrays[k] for k in ("ids", "groups") if k in arrays}
        values = [v for a in arrays.values() if a.dtype.kind in "iuU" for v in a.ravel().tolist()]
        among = self.everything if among is None else among
        return sum(h in among for h in self.hashes(values))

    def check_part(self, prefix: str, shard: int | None, files: list[str]) -> Head | None:
        """A shard (or the test data): its latest head, what that references, and the rest."""
        gens = [int(m.group(1)) for r in files if (m := HEAD_NAME.match(r[len(prefix) + 1 :]))]
        head_rel = head_path(prefix, max(gens)) if gens else ""
        body = self.docs.get(head_rel)
        if body is None:
            if shard is not None or files:
                self.flag("missing head", prefix, "no readable head: the part is not audited")
            return None
        head = Head(max(gens), body)
        refs = [head.data, *head.stages]
        live = {ref.dir + "/": self.manifest(ref, head_rel) for ref in refs}
        for rel in files:
            folder = next((d for d in live if rel.startswith(d)), None)
            name = rel.rsplit("/", 1)[-1]
            if rel == head_rel:
                continue
            if folder is None:
                hits = self.npz_hits(rel) if rel.endswith(".npz") else 0
                held = f"; it holds {hits} deleted or requested ID(s)" if hits else ""
                purged = self.npz_hits(rel, self.deleted) if hits else 0  # receipted
                if not purged and self.left_by_batch(prefix, rel, int(max(gens))):
                    detail = f"left by the unfinished batch until 'sisa process' resumes it{held}"
                    self.flag("unfinished batch leftover", rel, detail, "warning")
                    continue
                self.flag("unreferenced artifact", rel, f"not referenced by {head_rel}{held}")
            elif name.startswith(TEMP_PREFIX):
                self.flag("temp file", rel, "left inside a live artifact", "warning")
            elif live[folder] and name != MANIFEST and name not in live[folder].files:
                self.flag("unlisted file", rel, "in a live artifact but not in its manifest")
        data = self.check_data(head.data.dir, live[head.data.dir + "/"], shard)
        if data is not None:
            self.check_stages(prefix, head.stages, live, *data)
        return head

    def manifest(self, ref: DataRef | StageRef, head_rel: str) -> storage.Manifest | None:
        try:
            manifest = self.store.manifest(ref.dir)
        except StorageError as err:
            self.flag("corrupt artifact", ref.dir, str(err))
            return None
        if manifest.sha256 != ref.manifest:
            self.flag("corrupt artifact", ref.dir, f"not the manifest {head_rel} names")
            return None
        self.check_strings(f"{ref.dir}/{MANIFEST}", manifest.meta)
        return manifest

    def check_data(self, rel: str, manifest: storage.Manifest | None, shard: int | None):
        """Verify a part's data; for a shard return each point's slice and fingerprint."""
        if manifest is None:
            return None  # reported with the manifest
        try:  # every file is read (and verified) once; only the IDs are decoded
            files = {n: self.store.read_file(rel, n, manifest) for n in manifest.files}
            arrays = storage.decode_arrays(files[IDS_FILE])
        except (KeyError, StorageError, ValueError) as err:
            self.flag("corrupt data", rel, repr(err))
            return None
        ids, groups = arrays["ids"], arrays.get("groups")
        if "y" in arrays:
            self.labels_seen.update(np.unique(arrays["y"]).tolist())
        hashes = self.hashes(ids.tolist())
        dead = sum(h in self.deleted for h in hashes)
        if groups is not None:  # a legacy group tombstone may name a live group: not a leak
            group_hashes = self.hashes(groups.tolist())
            stale = {h for h in group_hashes if h in self.legacy} - self.requested_groups
            self.stale_groups |= stale
            dead += sum(h in self.deleted_groups and h not in stale for h in group_hashes)
        if dead:
            self.flag("deleted point in live data", rel, f"{dead} purged point(s) or group(s)")
        if pending := sum(h in self.pending for h in hashes):
            self.flag("pending deletion", rel, f"{pending} point(s) of open requests", "warning")
        if shard is None:
            return None
        return place(self.config.sisa, arrays, self.store.placement_key())[1], fingerprints(ids)

    def check_stages(self, prefix: str, stages: list[StageRef], live: dict, slice_of, fps) -> None:
        if len(stages) != self.config.sisa.slices:
            self.flag("corrupt checkpoint", prefix, f"its head lists {len(stages)} stages")
        parent = None
        for r, ref in enumerate(stages, 1):
            rel, manifest = ref.dir, live[ref.dir + "/"]
            if manifest is None:  # reported with the manifest
                parent = ref.state_hash
                continue
            try:
                raw = self.store.read_file(rel, WEIGHTS, manifest)
                storage.decode_state(self.store.read_file(rel, STATE, manifest))
                weights, meta = storage.decode_weights(raw), manifest.meta
            except (StorageError, ValueError) as err:
                self.flag("corrupt checkpoint", rel, repr(err))
                parent = ref.state_hash
                continue
            # the hash of the IDs stage r trained on, as sisa.ids.id_set_hash computes it
            trained_on = fingerprint_set_hash(fps[slice_of < r], self.store.id_hash_key())
            if not meta.get("ids_hash") == ref.ids_hash == trained_on:
                self.flag("checkpoint trained on other points", rel, f"stage {r} of {prefix}")
            if (meta.get("stage"), meta.get("parent")) != (r, parent):
                self.flag("broken lineage", rel, f"not stage {r} continuing stage {r - 1}")
            parent = storage.state_hash(weights)
            if not meta.get("state_hash") == ref.state_hash == parent:
                self.flag("corrupt checkpoint", rel, "its state hash is not its weights'")

    def check_serving(self, heads: dict[str, Head | None]) -> None:
        state = compliance.current(self.store)
        for k in range(self.config.sisa.shards):
            head, served = heads.get(shard_prefix(k)), state.shards.get(k)
            if head is None:
                continue  # reported with the part
            ref = served.ref if served is not None else None
            stages = {(s.dir, s.manifest) for s in head.stages}
            if served is None or ref is not None and (ref.dir, ref.manifest) not in stages:
                shown = dict(sorted(ref.to_body().items())) if ref is not None else None
                self.flag("serving a stale checkpoint", "serving", f"shard {k}: {shown}")
                continue
            applied = int(head.body.get("journal_seq", 0))
            held = [s for r in self.open if r.seq > applied for s in r.slices(k)]
            stage = ref.stage if ref is not None else 0
            if held and stage > min(held):
                detail = f"shard {k} serves stage {stage}, trained on a pending point"
                self.flag("serving a pending point", "serving", detail)
