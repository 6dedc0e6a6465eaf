"""Encrypted stores (``storage.encryption = "aes-256-gcm"``) end to end: training,
forgetting, serving, verify, evaluate and audit work and give the bits of a plaintext
store; every artifact is sealed; purging destroys the keys, so a copy made before a
forget no longer opens; and the key-encryption key stays outside the store."""

from __future__ import annotations

import secrets
import shutil
from pathlib import Path

import numpy as np
import pytest

from sisa.config import ConfigError
from sisa.deletion.accept import forget
from sisa.evidence.audit import audit
from sisa.evidence.status import evaluate
from sisa.serving.predictor import Predictor
from sisa.store.artifacts import SisaStore
from sisa.store.layout import SHARDS, TEST_PREFIX
from sisa.store.records import DataRef
from sisa.training.train import train
from storage import MANIFEST
from storage.crypto import MAGIC
from storage.keys import KeyDestroyedError
from tests.conftest import tiny_config, write_digits_npz
from tests.sisa.deletion.test_accept import assert_equals_scratch, layout, weights_by_shard

KEK = secrets.token_hex(32)
ROWS = np.random.default_rng(3).random((6, 64)).astype(np.float32)


@pytest.fixture
def kek(monkeypatch):
    monkeypatch.setenv("SISA_STORAGE__KEK", KEK)
    return KEK


def encrypted(keys: Path, **more) -> dict:
    return {"storage.encryption": "aes-256-gcm", "storage.key_store": str(keys)} | more


@pytest.fixture
def stores(tmp_path, kek):
    """make(name, encrypt, drop, like): a store trained on digits, sealed or not; ``like``
    names a sealed store whose placement (keyed by its key store) it shares."""

    def make(name="store", encrypt=True, drop=frozenset(), groups=False, like=None, **overrides):
        source = write_digits_npz(tmp_path / f"{name}.npz", drop=set(drop), groups=groups)
        sealing = encrypted(tmp_path / "keys") if encrypt else {}
        cfg = tiny_config(**{"data.source": str(source)} | sealing | overrides)
        url = str(tmp_path / name)
        train(cfg, url, placement_like=None if like is None else SisaStore(like))
        return url

    return make


def artifact_files(url: str) -> list[str]:
    store = SisaStore(url)
    return [r for r in store.files(SHARDS) + store.files(TEST_PREFIX) if not r.endswith(".json")]


def live_keys(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "keys").rglob("*.key"))


def test_training_seals_every_artifact_and_gives_the_plaintext_bits(stores, tmp_path):
    sealed = stores("sealed")
    plain = stores("plain", encrypt=False, like=sealed)
    assert weights_by_shard(sealed) == weights_by_shard(plain)
    a, b = SisaStore(sealed), SisaStore(plain)
    for k in range(3):
        wa, sa = a.read_stage(a.shard_head(k).stages[-1])
        wb, sb = b.read_stage(b.shard_head(k).stages[-1])
        assert all(np.array_equal(wa[n].numpy(), wb[n].numpy()) for n in wb)
        assert sa["optimizer"].keys() == sb["optimizer"].keys()
    files = artifact_files(sealed)
    assert files == artifact_files(plain) and files
    for rel in files:
        stored, clear = a.read_bytes(rel), b.read_bytes(rel)
        assert stored.startswith(MAGIC) and clear[64:128] not in stored
    assert all(a.read_bytes(r).startswith(b"{") for r in a.files(SHARDS) if r.endswith(MANIFEST))
    # one key per artifact: 3 shards x (data + 3 stages) + the test data; and the salt
    assert len(live_keys(tmp_path)) == 3 * 4 + 1 + 1


def test_forgetting_shreds_the_purged_artifacts_so_an_old_copy_never_opens(stores, tmp_path):
    url = stores()
    backup = tmp_path / "backup"
    shutil.copytree(url, backup)  # a backup of the store, not of the key store
    before = {p.name for p in live_keys(tmp_path)}
    ids, shards, slices = layout(url)
    gone = [int(ids[(shards == 1) & (slices == 0)][0]), int(ids[(shards == 2) & (slices == 2)][0])]
    forget(url, gone)
    assert_equals_scratch(stores, url, gone, like=url)  # sealed too, placed alike
    after = {p.name for p in live_keys(tmp_path)}
    assert len(after) == len(before) + 14  # the scratch store's, and as many as were shredded
    old = SisaStore(str(backup))
    for k in (1, 2):  # the retrained shards: their old data and stages no longer open
        head = old.shard_head(k)
        with pytest.raises(KeyDestroyedError):
            old.read_data(head.data)
        with pytest.raises(KeyDestroyedError):
            old.read_stage(head.stages[-1])
    old.read_stage(old.shard_head(0).stages[-1])  # an untouched shard still opens
    assert audit(url).ok


def test_serving_and_evaluation_read_a_sealed_store(stores):
    sealed = stores("sealed")
    plain = stores("plain", encrypt=False, like=sealed)
    got, want = (
        Predictor(sealed).predict(ROWS, probabilities=True),
        Predictor(plain).predict(ROWS, probabilities=True),
    )
    assert np.array_equal(got.probabilities, want.probabilities)
    assert evaluate(sealed) == evaluate(plain)


def test_without_the_kek_nothing_opens_and_the_error_says_where_to_put_it(stores, monkeypatch):
    url = stores()
    monkeypatch.delenv("SISA_STORAGE__KEK")
    with pytest.raises(ValueError, match="storage.kek: this store is encrypted.*SISA_STORAGE__KEK"):
        Predictor(url).predict(ROWS)
    monkeypatch.setenv("SISA_STORAGE__KEK", secrets.token_hex(32))
    with pytest.raises(ValueError, match="another key-encryption key"):
        Predictor(url).predict(ROWS)


def test_the_kek_can_come_from_a_file_and_never_enters_the_store(tmp_path, monkeypatch):
    monkeypatch.delenv("SISA_STORAGE__KEK", raising=False)
    kek_file = tmp_path / "kek.hex"
    kek_file.write_text(KEK + "\n")
    source = write_digits_npz(tmp_path / "d.npz")
    settings = encrypted(tmp_path / "keys", **{"storage.kek_file": str(kek_file)})
    url = str(tmp_path / "store")
    train(tiny_config(**{"data.source": str(source)} | settings), url)
    store = SisaStore(url)
    assert store.config().storage.kek_file == str(kek_file)
    raw = b"".join(store.read_bytes(r) for r in store.files())
    assert KEK.encode() not in raw and bytes.fromhex(KEK) not in raw
    keys = b"".join(p.read_bytes() for p in (tmp_path / "keys").rglob("*") if p.is_file())
    assert KEK.encode() not in keys and bytes.fromhex(KEK) not in keys
    assert Predictor(url).predict(ROWS).labels.shape == (6,)


def test_a_key_store_inside_the_store_is_refused_before_anything_is_written(tmp_path, kek):
    url = tmp_path / "store"
    with pytest.raises(ValueError, match="storage.key_store: .* overlaps the store"):
        train(tiny_config(**encrypted(url / "keys")), str(url))
    assert not url.exists()


def test_a_kek_given_on_the_command_line_only_is_refused(tmp_path, monkeypatch):
    monkeypatch.delenv("SISA_STORAGE__KEK", raising=False)
    cfg = tiny_config(**encrypted(tmp_path / "keys", **{"storage.kek": KEK}))
    assert "kek" not in cfg.stored()["storage"] and KEK not in repr(cfg)
    with pytest.raises(ValueError, match="storage.kek: give it as SISA_STORAGE__KEK"):
        train(cfg, str(tmp_path / "store"))
    assert not (tmp_path / "store").exists()


def test_encryption_settings_are_checked():
    with pytest.raises(ConfigError, match="storage.key_store: encryption needs a key store"):
        tiny_config(**{"storage.encryption": "aes-256-gcm"})
    with pytest.raises(ConfigError, match="storage.kek: .*64 hex characters") as err:
        tiny_config(**{"storage.kek": "not-a-key"})
    assert "not-a-key" not in str(err.value)
    with pytest.raises(ConfigError, match="storage.key_store: kek_file and key_store_options go"):
        tiny_config(**{"storage.kek_file": "/tmp/kek"})
    tiny_config(**{"storage.key_store": "/tmp/k"})  # a key store without encryption: the salt


def test_forgetting_evidence_on_a_sealed_store_leaves_no_keys_behind(stores, tmp_path):
    from sisa.evidence.forgetting import forgetting_evidence

    url = stores()
    ids, shards, _ = layout(url)
    gone = [int(i) for i in ids[shards == 0][:3]]
    forget(url, gone)
    keys = live_keys(tmp_path)
    report = forgetting_evidence(url, gone)
    assert report["identical"] is True  # by the tensors: sealed bytes differ from plain
    assert live_keys(tmp_path) == keys  # its reference store was temporary and unsealed


@pytest.mark.s3
@pytest.mark.parametrize("kept", ["versioning", "object lock"])
def test_a_key_store_bucket_that_keeps_deleted_objects_is_refused(s3_server, tmp_path, kek, kept):
    import uuid

    from storage import Store

    _, options = s3_server
    bucket = f"keys-{uuid.uuid4().hex[:12]}"
    fs = Store("s3://" + bucket, options).fs
    if kept == "versioning":
        fs.call_s3("create_bucket", Bucket=bucket)
        fs.call_s3(
            "put_bucket_versioning", Bucket=bucket, VersioningConfiguration={"Status": "Enabled"}
        )
    else:
        fs.call_s3("create_bucket", Bucket=bucket, ObjectLockEnabledForBucket=True)
    url = str(tmp_path / "store")  # on local disk: the key store's endpoint is its own
    endpoint = {"client_kwargs": options["client_kwargs"]}  # credentials: the environment
    settings = encrypted(f"s3://{bucket}/keys", **{"storage.key_store_options": endpoint})
    with pytest.raises(ValueError, match=f"storage.key_store: bucket '{bucket}' has {kept}"):
        train(tiny_config(**settings), url)
    assert not Path(url).exists()


@pytest.mark.s3
def test_a_key_store_on_another_backend_takes_its_own_options(s3_server, tmp_path, kek):
    s3_url, options = s3_server
    import uuid

    keys = f"{s3_url}/keys-{uuid.uuid4().hex}"
    endpoint = {"client_kwargs": options["client_kwargs"]}
    source = write_digits_npz(tmp_path / "d.npz")
    settings = encrypted(keys, **{"storage.key_store_options": endpoint})
    url = str(tmp_path / "store")
    train(tiny_config(**{"data.source": str(source)} | settings), url)
    assert Predictor(url).predict(ROWS).labels.shape == (6,)
    with pytest.raises(ConfigError, match="storage.key_store_options: .*holds secret"):
        tiny_config(**settings | {"storage.key_store_options": {"secret": "x"}})


def test_a_deleted_id_and_a_never_present_one_look_alike_to_the_store(stores, tmp_path):
    """The key of the ID hashes lives in the key store: from the store alone, a deleted ID
    and an ID that was never there (placed in the same shard and slice, so that placement
    tells nothing either) leave the same traces, which is none."""
    import hashlib

    from sisa.data.partition import place
    from sisa.ids import fingerprints, id_bytes, id_set_hash, salted_hash

    url = stores()
    store = SisaStore(url)
    ids, shards, slices = layout(url)
    deleted = int(ids[(shards == 1) & (slices == 1)][0])
    forget(url, [deleted])
    cfg = store.config().sisa

    def placed(i: int) -> tuple[int, int]:  # by the seed in the record: what anyone can do
        shard, slice_ = place(cfg, {"ids": np.array([i]), "y": np.array([0])})
        return int(shard[0]), int(slice_[0])

    # the placement is keyed by the key store's secret: the seed alone tells nothing of
    # where an ID is (chance is 1 in 9 here; unkeyed, every point would agree)
    guessed = place(cfg, {"ids": ids, "y": np.zeros(len(ids), dtype=np.int64)})
    agree = float(np.mean((guessed[0] == shards) & (guessed[1] == slices)))
    assert agree < 0.25, agree
    assert store.placement_key() is not None and store.intent()["keyed_placement"] is True
    never = next(i for i in range(10_000, 100_000) if placed(i) == placed(deleted))
    assert never not in set(ids.tolist())
    intent = store.intent()
    assert "salt" not in intent and "salt_key" in intent  # only the key's name
    raw = b"".join(store.read_bytes(r) for r in store.files())
    salt = store.salt()  # from the key store, with the KEK
    assert salt.hex().encode() not in raw and salt not in raw

    def traces(i: int) -> list[bytes]:
        """What anyone holding the store alone can compute of an ID and look for."""
        b = id_bytes(i)
        return [
            hashlib.sha256(b).hexdigest().encode(),
            hashlib.blake2b(b, digest_size=16).hexdigest().encode(),
            fingerprints(np.array([i])).tobytes(),
            id_set_hash(np.array([i])).encode(),
            f'"{i}"'.encode(),
        ]

    assert [t in raw for t in traces(deleted)] == [t in raw for t in traces(never)]
    assert not any(t in raw for t in traces(deleted))
    # whoever holds the key store's salt does find the deleted one (receipts stay checkable)
    assert salted_hash(salt, deleted).encode() in raw
    assert salted_hash(salt, never).encode() not in raw
    # the set hashes of data and checkpoints are keyed too, and so is the source's hash
    head = store.shard_head(1)
    held = store.read_data(head.data, features=False)["ids"]
    recorded = store.manifest(head.data.dir).meta["ids_hash"]
    assert recorded == id_set_hash(held, salt) != id_set_hash(held)
    from sisa.data.sources import open_source

    source = open_source(store.config().data, store.config().sisa.seed).index().content_hash
    assert intent["data_hash"] == store.record_hash(source) != source


def test_a_backup_of_the_store_holds_nothing_readable_once_forgotten(tmp_path, kek):
    """Proof against a copy: back the store up, forget and process, then (1) every
    artifact of the old generations in the backup fails to open with the live key store,
    (2) no plaintext ID or feature value appears in any byte of the store or the backup,
    and (3) the live store reads and audits cleanly."""
    from sklearn.datasets import load_digits

    from sisa.deletion.accept import accept
    from sisa.deletion.batch import process

    d = load_digits()
    names = np.array([f"subject-{i:04d}-{secrets.token_hex(4)}" for i in range(len(d.target))])
    X = (d.data / 16.0).astype(np.float32)
    X[:, 5] += 0.123456789  # values no config, count or hash could hold by chance
    np.savez(tmp_path / "people.npz", ids=names, X=X, y=d.target.astype(np.int64))
    settings = {"data.source": str(tmp_path / "people.npz")} | encrypted(tmp_path / "keys")
    url = str(tmp_path / "store")
    train(tiny_config(**settings), url)
    backup = tmp_path / "backup"
    shutil.copytree(url, backup)
    store = SisaStore(url)
    gone = store.read_data(store.shard_head(0).data, features=False)["ids"][:3].tolist()
    gone += store.read_data(store.shard_head(2).data, features=False)["ids"][-2:].tolist()
    accept(url, gone)
    process(url)

    old = SisaStore(str(backup))
    opened = 0
    for k in (0, 2):  # the old generations of the retrained shards
        head = old.shard_head(k)
        for ref in (head.data, *head.stages):
            live = {r.dir for r in (store.shard_head(k).data, *store.shard_head(k).stages)}
            if ref.dir in live:
                continue  # kept by the retrain (stages before the deleted points' slices)
            with pytest.raises(KeyDestroyedError):
                old.read_data(ref) if isinstance(ref, DataRef) else old.read_stage(ref)
            opened += 1
    assert opened >= 2

    for folder in (Path(url), backup):
        raw = b"".join(p.read_bytes() for p in folder.rglob("*") if p.is_file())
        assert not any(name.encode() in raw for name in names[:50])  # no ID, deleted or not
        assert not any(name.encode() in raw for name in gone)
        for row in X[:20]:
            assert row.tobytes()[20:36] not in raw  # no run of feature values
    assert audit(url).ok
    assert Predictor(url).predict(ROWS).labels.shape == (6,)


def test_the_audit_finds_a_key_that_outlived_its_artifact_and_a_live_one_lost(
    stores, tmp_path, monkeypatch
):
    url = stores()
    saved = tmp_path / "keys-before"
    shutil.copytree(tmp_path / "keys", saved)  # the key store's own backup: the contract broken
    ids, shards, slices = layout(url)
    forget(url, [int(ids[(shards == 1) & (slices == 0)][0])])
    assert audit(url).ok
    shutil.copytree(saved, tmp_path / "keys", dirs_exist_ok=True)  # restored: old keys back
    report = audit(url)
    kinds = {f.kind for f in report.violations}
    assert not report.ok and kinds == {"undestroyed data key"}
    forget(url, [int(ids[(shards == 2) & (slices == 2)][0])])  # its sweep destroys them again
    assert audit(url).ok
    monkeypatch.setattr("storage.keys.CACHE_SECONDS", 0.0)  # no key this process holds
    live = SisaStore(url).shard_head(0).stages[-1]
    for key in (tmp_path / "keys").rglob("*.key"):
        if f"/{live.dir}/" in key.as_posix():
            key.unlink()
    report = audit(url)
    assert {f.kind for f in report.violations} == {
        "destroyed key of a live artifact",  # and so, unreadable:
        "corrupt checkpoint",
    }
    lost = [f.path for f in report.violations if f.kind == "destroyed key of a live artifact"]
    assert lost == [live.dir]


def _versioned_bucket(options: dict) -> tuple[str, object]:
    import uuid

    from storage import Store

    bucket = f"versioned-{uuid.uuid4().hex[:12]}"
    fs = Store("s3://" + bucket, options).fs
    fs.call_s3("create_bucket", Bucket=bucket)
    fs.call_s3(
        "put_bucket_versioning", Bucket=bucket, VersioningConfiguration={"Status": "Enabled"}
    )
    return bucket, fs


@pytest.mark.s3
def test_a_versioned_bucket_is_refused_unencrypted_and_kept_clean_encrypted(
    s3_server, tmp_path, kek
):
    """Without encryption a versioned store bucket is refused, unless allow_versioned says
    the operator removes old versions. With encryption it trains; purging deletes the
    noncurrent versions of what it deletes; the audit reports any version left, sealed
    under a destroyed key (a warning) or readable (a violation)."""
    _, options = s3_server
    bucket, fs = _versioned_bucket(options)
    plain = f"s3://{bucket}/plain"
    with pytest.raises(ValueError, match="storage.encryption: bucket .* has versioning Enabled"):
        train(tiny_config(), plain, options)
    assert not fs.find(f"{bucket}/plain")
    train(tiny_config(**{"storage.allow_versioned": True}), plain, options)

    url = f"s3://{bucket}/sealed"
    keys = tmp_path / "keys"  # on local disk, apart from the bucket
    train(tiny_config(**encrypted(keys)), url, options)
    store = SisaStore(url, options)
    old = store.shard_head(1)
    ids, shards, slices = layout_of(url, options)
    forget(url, [int(ids[(shards == 1) & (slices == 0)][0])], storage_options=options)
    left = [r for r, _ in store.fs.noncurrent_versions("shards/00001")]
    assert left == []  # the purge deleted every version of what it deleted
    assert audit(url, options).ok
    # a version the purge could not delete (written after it, as a lifecycle race would)
    purged = f"{old.data.dir}/ids.npz"
    store.fs.write_bytes(purged, b"sealed bytes of a purged artifact")
    store.fs.delete(purged)
    report = audit(url, options)
    assert report.ok and ("noncurrent version", purged) in {
        (f.kind, f.path) for f in report.findings
    }
    plain_store = SisaStore(plain, options)
    rel = f"{plain_store.shard_head(0).data.dir}/ids.npz"
    plain_store.fs.write_bytes(rel, plain_store.fs.read_bytes(rel))  # the old one: noncurrent
    report = audit(plain, options)
    assert [(f.kind, f.path) for f in report.violations] == [("readable noncurrent version", rel)]
    # rekey rewrites the record: the bucket's old versions of it, salt and all, go too
    from sisa.store.rekey import rekey

    salt = plain_store.salt()
    record = plain_store.fs.read_bytes("config.json")
    plain_store.fs.write_bytes("config.json", record)  # a second version: the first is kept
    assert [r for r, _ in plain_store.noncurrent_versions("config.json")] == ["config.json"]
    rekey(plain, options, key_store=str(tmp_path / "plain-keys"))
    assert SisaStore(plain, options).noncurrent_versions("config.json") == []
    assert SisaStore(plain, options).salt() == salt


def layout_of(url: str, options: dict):
    from sisa.data.partition import place

    store = SisaStore(url, options)
    cfg = store.config()
    ids, shards, slices = [], [], []
    for k in range(cfg.sisa.shards):
        arrays = store.read_data(store.shard_head(k).data, features=False)
        ids += arrays["ids"].tolist()
        shards += [k] * len(arrays["ids"])
        slices += place(cfg.sisa, arrays, store.placement_key())[1].tolist()
    return np.array(ids), np.array(shards), np.array(slices)


def test_a_copy_of_a_sealed_store_can_be_read_but_never_purges_the_originals_keys(stores, tmp_path):
    """A clone shares the original's key scope: its purges would destroy the original's
    live keys. The key store records which store a scope belongs to, and a copy may read
    but never make or destroy keys."""
    from storage import StorageError

    url = stores()
    clone = tmp_path / "clone"
    shutil.copytree(url, clone)
    assert Predictor(str(clone)).predict(ROWS).labels.shape == (6,)  # reading is fine
    ids, shards, _ = layout(url)
    with pytest.raises(StorageError, match="is a copy of it, which may be read but not"):
        forget(str(clone), [int(ids[shards == 1][0])])
    assert audit(url).ok  # the original lost no key
    forget(url, [int(ids[shards == 1][0])])
    assert audit(url).ok


def test_an_overwrite_keeps_the_key_store_and_the_encryption(stores, tmp_path):
    url = stores()
    source = SisaStore(url).config().data.source
    plain = tiny_config(**{"data.source": source})
    with pytest.raises(ValueError, match="storage.key_store: .* keeps its salt in"):
        train(plain, url, overwrite=True)
    salt_only = tiny_config(**{"data.source": source, "storage.key_store": str(tmp_path / "keys")})
    with pytest.raises(ValueError, match="storage.encryption: .* is encrypted"):
        train(salt_only, url, overwrite=True)
    assert audit(url).ok  # nothing was cleared
    train(SisaStore(url).config(), url, overwrite=True)  # the same storage: fine
    assert audit(url).ok


def test_an_interrupted_attempt_at_the_test_data_leaves_no_key(stores, tmp_path, monkeypatch):
    """An ingest that died while writing the test data left a data key; the ingest that
    commits the test data destroys it (before, only a later ``process`` did)."""
    original = SisaStore.write_intent

    def interrupted(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self.keys().new_key("test/g000000/data")  # the dead attempt's key

    monkeypatch.setattr(SisaStore, "write_intent", interrupted)
    url = stores()
    assert audit(url).ok
    held = [p for p in live_keys(tmp_path) if "/test/" in p.as_posix()]
    assert len(held) == 1  # the committed test data's own key


def test_credentials_in_the_key_store_options_are_refused_at_any_depth():
    nested = {"client_kwargs": {"aws_secret_access_key": "x", "endpoint_url": "http://h"}}
    with pytest.raises(ConfigError, match="client_kwargs.aws_secret_access_key: credentials"):
        tiny_config(**{"storage.key_store": "/tmp/k", "storage.key_store_options": nested})


def test_a_sealed_leftover_is_named_by_its_place_not_misread(stores):
    url = stores()
    store = SisaStore(url)
    data = store.shard_head(0).data
    stray = "shards/00000/g000009/data/X.npz"  # no head references it
    store.fs.write_bytes(stray, store.read_bytes(f"{data.dir}/{data.x_files[0]}"))
    report = audit(url)
    found = {(f.kind, f.path) for f in report.findings}
    assert ("unreferenced artifact", stray) in found
    assert not any(f.kind == "unexpected file" for f in report.findings)  # not read as npz
