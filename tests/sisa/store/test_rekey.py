"""``rekey``: an existing store's salt moves into a key store; every salted hash, the
receipt chain and its anchored head stay valid; the record no longer holds the salt."""

from __future__ import annotations

import secrets

import pytest

from sisa.deletion.accept import forget
from sisa.deletion.lifecycle import request_status
from sisa.evidence.audit import audit
from sisa.evidence.verify import verify
from sisa.ids import salted_hash
from sisa.store.artifacts import SisaStore
from sisa.store.rekey import rekey
from sisa.training.train import train
from tests.conftest import tiny_config
from tests.sisa.deletion.test_accept import layout


@pytest.fixture
def kek(monkeypatch):
    monkeypatch.setenv("SISA_STORAGE__KEK", secrets.token_hex(32))


def test_rekey_moves_the_salt_out_and_keeps_the_receipt_chain(tmp_path, kek):
    url = str(tmp_path / "store")
    train(tiny_config(), url)
    ids, shards, _ = layout(url)
    victim = int(ids[shards == 1][0])
    report = forget(url, [victim])
    store = SisaStore(url)
    salt = store.salt()
    head = audit(url).chain.head
    assert head is not None and "salt" in store.intent()

    name = rekey(url, key_store=str(tmp_path / "keys"))
    store = SisaStore(url)
    intent = store.intent()
    assert "salt" not in intent and intent["salt_key"] == name.rsplit("/", 1)[1]
    assert store.config().storage.key_store == str(tmp_path / "keys")
    assert store.salt() == salt  # the same salt, from the key store
    raw = b"".join(store.read_bytes(r) for r in store.files())
    assert salt.hex().encode() not in raw
    assert audit(url, expect_head=head).ok  # the chain was not rewritten
    assert request_status(store, report.request_id).receipt["ids"] == [salted_hash(salt, victim)]
    assert verify(url).identical  # its ID-set hashes stay plain sha256, as written
    forget(url, [int(ids[shards == 2][0])])  # and it goes on forgetting
    assert audit(url).ok

    with pytest.raises(ValueError, match="already keeps its salt in its key store"):
        rekey(url, key_store=str(tmp_path / "other"))


def test_rekey_refuses_a_key_store_train_would_refuse_and_changes_nothing(tmp_path, monkeypatch):
    url = str(tmp_path / "store")
    train(tiny_config(), url)
    before = SisaStore(url).intent()
    monkeypatch.delenv("SISA_STORAGE__KEK", raising=False)
    with pytest.raises(ValueError, match="storage.kek: .*SISA_STORAGE__KEK"):
        rekey(url, key_store=str(tmp_path / "keys"))
    monkeypatch.setenv("SISA_STORAGE__KEK", secrets.token_hex(32))
    with pytest.raises(ValueError, match="overlaps the store"):
        rekey(url, key_store=str(tmp_path / "store" / "keys"))
    assert SisaStore(url).intent() == before
    assert not (tmp_path / "keys").exists()


def test_a_new_store_with_a_key_store_but_no_encryption_keeps_its_salt_there(tmp_path, kek):
    url = str(tmp_path / "store")
    train(tiny_config(**{"storage.key_store": str(tmp_path / "keys")}), url)
    store = SisaStore(url)
    assert "salt" not in store.intent() and store.intent()["keyed_hashes"] is True
    assert store.keys() is not None and store.sealing() is None  # not sealed
    ids, shards, _ = layout(url)
    forget(url, [int(ids[0])])
    assert audit(url).ok and verify(url).identical
    stage = store.shard_head(0).stages[-1]
    assert store.read_bytes(f"{stage.dir}/weights.safetensors")[:8] != b"SISA-GCM"  # plain
