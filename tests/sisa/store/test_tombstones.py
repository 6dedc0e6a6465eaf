"""Group tombstones: deleting some points of a group never deletes the group.

A randomized sequence of requests by ID and by group passes ``audit`` after every batch;
``train --overwrite`` accepts the rest of a partly deleted group and refuses a deleted
one; a store whose tombstones an earlier version wrote (the group of every removed
point) audits with a warning, and ``sisa repair`` drops the stale groups."""

from __future__ import annotations

import numpy as np
import pytest

from orchestrator.cli import main
from sisa.deletion.accept import accept, forget
from sisa.deletion.batch import process
from sisa.evidence.audit import audit
from sisa.evidence.verify import verify
from sisa.ids import salted_hash
from sisa.store.artifacts import SisaStore, StoreStateError
from sisa.store.layout import TOMBSTONES
from sisa.store.tombstones import GROUP_RULE, deleted_groups, repair_tombstones, stale_groups
from sisa.training.train import train
from tests.conftest import tiny_config, write_digits_npz


def grouped_config(source, sharding="uniform"):
    return tiny_config(**{"data.source": str(source), "sisa.sharding": sharding})


def live_points(url) -> dict[int, str]:
    """ID -> group of every point in the store's latest heads (training and test)."""
    store = SisaStore(url)
    heads = [store.shard_head(k) for k in range(store.config().sisa.shards)]
    heads.append(store.latest_head("test"))
    out = {}
    for head in heads:
        arrays = store.read_data(head.data, features=False)
        out |= dict(zip(arrays["ids"].tolist(), arrays["groups"].tolist(), strict=True))
    return out


def assert_clean(url):
    report = audit(url)
    assert report.ok, report.violations
    assert not [f for f in report.findings if f.kind == "stale group tombstone"]


@pytest.mark.parametrize("sharding", ["uniform", "group"])
def test_random_requests_by_id_and_by_group_audit_clean_after_every_batch(tmp_path, sharding):
    source = write_digits_npz(tmp_path / "g.npz", groups=True)
    url = str(tmp_path / "s")
    train(grouped_config(source, sharding), url)
    rng = np.random.default_rng(11)
    partly = set()  # groups that lost some points by ID and still have others
    for _ in range(5):
        for _ in range(int(rng.integers(1, 4))):
            live = live_points(url)
            if rng.random() < 0.35:
                group = rng.choice(sorted(set(live.values())))
                accept(url, group=str(group))
            else:
                ids = rng.choice(sorted(live), size=int(rng.integers(1, 3)), replace=False)
                accept(url, [int(i) for i in ids])
        process(url)
        assert_clean(url)
        live = live_points(url)
        by_group: dict[str, int] = {}
        for g in live.values():
            by_group[g] = by_group.get(g, 0) + 1
        partly |= {g for g, n in by_group.items() if n < 4}
    assert partly, "the sequence should leave some groups partly deleted"
    # a partly deleted group is still a live group: forgetting it removes the rest
    group = sorted(partly & set(live_points(url).values()))[0]
    rest = sorted(i for i, g in live_points(url).items() if g == group)
    accepted = accept(url, group=group)
    assert sorted(accepted.removed + accepted.removed_from_test) == rest
    process(url)
    assert group not in set(live_points(url).values())
    assert salted_hash(SisaStore(url).salt(), group) in deleted_groups(SisaStore(url))
    assert_clean(url)
    assert verify(url).identical


def grouped_source(tmp_path, kind: str):
    """Digits with groups of four as an ``.npz``, or as a CSV; and how its IDs are typed."""
    source = write_digits_npz(tmp_path / "g.npz", groups=True)
    if kind == "npz":
        return source, int
    import pandas as pd

    with np.load(source) as f:
        frame = pd.DataFrame(f["X"], columns=[f"px{j}" for j in range(f["X"].shape[1])])
        frame.insert(0, "group", f["groups"])
        frame.insert(0, "label", f["y"])
        frame.insert(0, "id", f["ids"])
    frame.to_csv(tmp_path / "g.csv", index=False)
    return tmp_path / "g.csv", int  # digits-only IDs read as integers


@pytest.mark.parametrize("kind", ["npz", "csv"])
def test_forgetting_one_point_keeps_its_group_live_and_forgettable(tmp_path, kind):
    source, as_id = grouped_source(tmp_path, kind)
    url = str(tmp_path / "s")
    train(grouped_config(source), url)
    forget(url, [as_id(1040)])  # one point of person-10
    store = SisaStore(url)
    assert store.tombstones().body["groups"] == []
    assert_clean(url)
    second = accept(url, group="person-10")  # the other three: a real request, no no-op
    assert second.request_id is not None
    rest = [as_id(i) for i in (1041, 1042, 1043)]
    assert sorted(second.removed + second.removed_from_test) == rest
    process(url)
    assert store.tombstones().body["groups"] == [salted_hash(store.salt(), "person-10")]
    assert_clean(url)


def test_the_last_point_of_a_group_deletes_the_group(tmp_path):
    source = write_digits_npz(tmp_path / "g.npz", groups=True)
    url = str(tmp_path / "s")
    train(grouped_config(source), url)
    forget(url, [1040, 1041])
    forget(url, [1042])
    assert SisaStore(url).tombstones().body["groups"] == []
    forget(url, [1043])
    store = SisaStore(url)
    assert store.tombstones().body["groups"] == [salted_hash(store.salt(), "person-10")]
    assert accept(url, group="person-10").already_deleted == ["person-10"]
    assert_clean(url)


def test_overwrite_accepts_the_rest_of_a_partly_deleted_group(tmp_path):
    source = write_digits_npz(tmp_path / "g.npz", groups=True)
    url = str(tmp_path / "s")
    train(grouped_config(source), url)
    forget(url, [1040])
    rest = write_digits_npz(tmp_path / "rest.npz", groups=True, drop={1040})
    train(grouped_config(rest), url, overwrite=True)
    assert 1041 in live_points(url) and 1040 not in live_points(url)
    assert_clean(url)


def test_overwrite_refuses_a_group_whose_points_are_all_gone(tmp_path):
    source = write_digits_npz(tmp_path / "g.npz", groups=True)
    url = str(tmp_path / "s")
    train(grouped_config(source), url)
    forget(url, group="person-10")
    rest = write_digits_npz(tmp_path / "rest.npz", groups=True, drop={1040, 1041, 1042, 1043})
    arrays = dict(np.load(rest))
    arrays["groups"][arrays["ids"] == 1100] = "person-10"  # a new point of the deleted group
    np.savez(tmp_path / "back.npz", **arrays)
    before = SisaStore(url).shard_head(0).generation, live_points(url)
    with pytest.raises(StoreStateError, match="1 group"):
        train(grouped_config(tmp_path / "back.npz"), url, overwrite=True)
    assert (SisaStore(url).shard_head(0).generation, live_points(url)) == before
    train(grouped_config(rest), url, overwrite=True)  # without the point, it trains
    assert_clean(url)


def test_overwrite_refuses_a_group_emptied_point_by_point(tmp_path):
    source = write_digits_npz(tmp_path / "g.npz", groups=True)
    url = str(tmp_path / "s")
    train(grouped_config(source), url)
    forget(url, [1040, 1041, 1042, 1043])
    gone = {1040, 1041, 1042, 1043}
    arrays = dict(np.load(write_digits_npz(tmp_path / "r.npz", groups=True, drop=gone)))
    arrays["groups"][arrays["ids"] == 1100] = "person-10"
    np.savez(tmp_path / "back.npz", **arrays)
    with pytest.raises(StoreStateError, match="group"):
        train(grouped_config(tmp_path / "back.npz"), url, overwrite=True)


def legacy_tombstones(url, groups: list[str]) -> None:
    """Tombstones as an earlier version wrote them: these groups, and no rule mark."""
    store = SisaStore(url)
    current = store.tombstones()
    hashes = sorted({salted_hash(store.salt(), g) for g in groups} | set(current.body["groups"]))
    body = {"entries": current.body["entries"], "groups": hashes}
    store.commit_head(TOMBSTONES, current.generation + 1, body)
    store.fs.delete(f"{TOMBSTONES}/g{current.generation:06d}.json")


def test_a_store_with_legacy_group_tombstones_audits_and_is_repaired(tmp_path, capsys):
    source = write_digits_npz(tmp_path / "g.npz", groups=True)
    url = str(tmp_path / "s")
    train(grouped_config(source), url)
    forget(url, [1040, 1080])  # one point each of person-10 and person-20
    forget(url, [1120, 1121, 1122, 1123])  # every point of person-30
    legacy_tombstones(url, ["person-10", "person-20", "person-30"])  # the old bug
    report = audit(url)
    assert report.ok, report.violations  # no false alarm ...
    stale = [f for f in report.findings if f.kind == "stale group tombstone"]
    assert len(stale) == 1 and "2 tombstoned group(s)" in stale[0].detail  # ... but named
    store = SisaStore(url)
    assert len(stale_groups(store)) == 2
    # the stale groups stay forgettable in the meantime, and overwrite takes their rest
    rest = accept(url, group="person-20")
    assert sorted(rest.removed + rest.removed_from_test) == [1081, 1082, 1083]
    process(url)
    assert main(["repair", "--store", url]) == 0
    assert "dropped 1 stale group tombstone(s)" in capsys.readouterr().out  # person-10
    assert_clean(url)
    tombs = SisaStore(url).tombstones().body
    hashes = {salted_hash(store.salt(), g) for g in ("person-20", "person-30")}
    assert set(tombs["groups"]) == hashes and tombs[GROUP_RULE] == "emptied"
    assert tombs["repairs"][0]["dropped_groups"] == 1
    assert repair_tombstones(url).dropped_groups == 0  # idempotent
    assert main(["repair", "--store", url]) == 0
    assert "nothing to repair" in capsys.readouterr().out
    assert accept(url, group="person-10").request_id is not None  # its rest, still live


def test_a_deleted_group_found_in_live_data_is_a_violation(tmp_path):
    """Under the rule, a tombstoned group with live points is evidence, not a leftover."""
    source = write_digits_npz(tmp_path / "g.npz", groups=True)
    url = str(tmp_path / "s")
    train(grouped_config(source), url)
    forget(url, [1000])  # writes tombstones under the rule
    store = SisaStore(url)
    current = store.tombstones()
    forged = current.body | {"groups": [salted_hash(store.salt(), "person-20")]}
    store.commit_head(TOMBSTONES, current.generation + 1, forged)
    kinds = {f.kind for f in audit(url).violations}
    assert "deleted point in live data" in kinds
