"""Which groups a store counts as deleted, and the repair of group tombstones.

The tombstones (``SisaStore.tombstones``) hold the salted hash of every deleted ID and of
every deleted group. The rule for groups:

* a **group is deleted** when a request named it (``forget --group``), or when its last
  point was deleted, by whatever requests: no point of the store carries it any more;
* deleting **some** points of a group deletes those points, never the group. The group's
  other points stay live and the group stays forgettable.

A batch therefore tombstones only the groups it emptied (``emptied_groups``), checked
against every part's data after its retrains committed. A deleted group is what makes a
later ``forget --group`` of it a no-op and what ``train --overwrite`` refuses to bring back.

Versions before this rule tombstoned the group of every removed point, so a group with
live points could be tombstoned. The first tombstones written under the rule mark it
(``group_rule``) and keep the groups tombstoned before it as ``legacy_groups``. Every
reader tolerates such a store: a tombstoned group that still has points counts as live
(``deleted_groups``); ``audit`` warns about a legacy one (``stale_groups``) and reports
any other as a violation; ``repair_tombstones`` (``sisa repair``) drops the stale ones.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sisa.ids import salted_hashes
from sisa.store.artifacts import Head, SisaStore, StorageOptions, open_store
from sisa.store.fencing import holding
from sisa.store.journal import Journal
from sisa.store.layout import PROCESS_LOCK, TEST_PREFIX, TOMBSTONES, shard_prefix

# tombstones written under the rule that a group is deleted only once emptied carry it
GROUP_RULE = "group_rule"


def add_tombstones(store: SisaStore, entries: list[dict[str, Any]], groups: list[str]) -> Head:
    """Record deleted IDs (salted hashes with their part) once their batch is purged, and
    the groups it emptied."""
    current = store.tombstones()
    body = current.body | {
        "entries": current.body["entries"] + entries,
        "groups": sorted(set(current.body["groups"]) | set(groups)),
    }
    if GROUP_RULE not in current.body:  # the first tombstones under the rule: see above
        body |= {GROUP_RULE: "emptied", "legacy_groups": sorted(current.body["groups"])}
    return _commit(store, current, body)


def drop_tombstoned_groups(store: SisaStore, groups: set[str], record: dict[str, Any]) -> Head:
    """Remove group hashes from the tombstones (``repair_tombstones``); ``record`` says when
    and how many, and is kept in the tombstones for good."""
    current = store.tombstones()
    body = current.body | {
        "groups": sorted(set(current.body["groups"]) - groups),
        "legacy_groups": sorted(set(current.body.get("legacy_groups", [])) - groups),
        GROUP_RULE: "emptied",
        "repairs": [*current.body.get("repairs", []), record],
    }
    return _commit(store, current, body)


def _commit(store: SisaStore, current: Head, body: dict[str, Any]) -> Head:
    head = store.commit_head(TOMBSTONES, current.generation + 1, body)  # the one it read
    store.prune_heads(TOMBSTONES, head.generation)
    return head


def live_groups(store: SisaStore) -> set[str]:
    """Salted hashes of the groups some point of the store's latest heads carries."""
    salt, out = store.salt(), set()
    prefixes = [shard_prefix(k) for k in range(store.config().sisa.shards)] + [TEST_PREFIX]
    for prefix in prefixes:
        head = store.latest_head(prefix)
        if head is None:
            continue
        arrays = store.read_data(head.data, features=False)
        if "groups" in arrays:
            out.update(salted_hashes(salt, arrays["groups"]))
    return out


def requested_groups(store: SisaStore) -> set[str]:
    """Salted hashes of the groups a journaled request named (open or receipted)."""
    return {r.group for r in Journal(store).all_requests() if r.group}


def emptied_groups(store: SisaStore, candidates: set[str]) -> set[str]:
    """Of ``candidates`` (groups of removed points), those no live point carries any more."""
    if not candidates:
        return set()
    return candidates - live_groups(store)


def deleted_groups(store: SisaStore, live: set[str] | None = None) -> set[str]:
    """Groups the store counts as deleted: tombstoned or requested, and carried by no point.

    ``live`` (``live_groups``) may be passed when the caller has read it already.
    """
    tombstoned = set(store.tombstones().body["groups"])
    named = tombstoned | requested_groups(store)
    if not named:
        return set()
    return named - (live_groups(store) if live is None else live)


def legacy_groups(tombstones: dict[str, Any]) -> set[str]:
    """Groups tombstoned before the rule (every group, in tombstones that lack its mark)."""
    if GROUP_RULE not in tombstones:
        return set(tombstones["groups"])
    return set(tombstones.get("legacy_groups", [])) & set(tombstones["groups"])


def stale_groups(store: SisaStore) -> set[str]:
    """Legacy group tombstones that no request named and that still have live points."""
    legacy = legacy_groups(store.tombstones().body)
    if not legacy:
        return set()
    return (legacy - requested_groups(store)) & live_groups(store)


@dataclass(frozen=True)
class Repair:
    dropped_groups: int  # stale group tombstones removed
    tombstone_generation: int  # of the tombstones after the repair


def repair_tombstones(store: SisaStore | str, storage_options: StorageOptions = None) -> Repair:
    """Drop stale group tombstones (see the module docstring); idempotent.

    Runs under the store's process lease, so no batch tombstones meanwhile. IDs are never
    touched: every deleted point stays deleted.
    """
    store = open_store(store, storage_options)
    store.require_trained()
    with holding(store, store.lease(PROCESS_LOCK, store.config().deletion.lease_s)):
        stale = stale_groups(store)
        if not stale:
            return Repair(0, store.tombstones().generation)
        record = {"at": time.time(), "dropped_groups": len(stale)}
        head = drop_tombstoned_groups(store, stale, record)
        return Repair(len(stale), head.generation)
