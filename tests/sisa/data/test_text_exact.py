"""Exactness over a table of texts: token IDs by a given tokenizer, the text models, and
forgetting (first slice, last slice) bitwise equal to training from scratch without the
points; a tokenizer that changed since training is refused wherever the source is read."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sisa.config import ConfigError
from sisa.data.dataset import DataError
from sisa.data.sources import open_source
from sisa.deletion.accept import forget
from sisa.store.artifacts import SisaStore
from sisa.training.train import train
from tests.conftest import tiny_config
from tests.sisa.data.test_text import tokenizer_file
from tests.sisa.deletion.test_accept import assert_equals_scratch, layout

WORDS = [
    "good",
    "great",
    "fine",
    "bad",
    "awful",
    "poor",
    "movie",
    "film",
    "plot",
    "actor",
    "the",
    "a",
    "very",
    "not",
]
MODELS = {
    "textbag": {"model.name": "textbag", "model.hidden": [8]},
    "transformer": {"model.name": "transformer", "model.hidden": [8, 8], "model.heads": 2},
}


def reviews(n: int = 120) -> pd.DataFrame:
    rng = np.random.default_rng(5)
    rows = []
    for i in range(n):
        positive = i % 2 == 0
        mood = ["good", "great", "fine"] if positive else ["bad", "awful", "poor"]
        words = rng.choice(mood + ["movie", "film", "plot", "the", "a", "very"], size=6)
        rows.append({"rid": f"R{i:03d}", "sentiment": "pos" if positive else "neg",
                     "review": " ".join(words)})  # fmt: skip
    return pd.DataFrame(rows)


@pytest.fixture
def texts(tmp_path):
    """A store trained on a CSV of reviews; the tokenizer is given, fitted on a word list
    that is not the training data."""
    tok = tokenizer_file(tmp_path / "tok.json", [" ".join(WORDS)])

    def make(name="store", drop=frozenset(), groups=False, **overrides):
        frame = reviews()
        path = tmp_path / f"{name}.csv"
        frame[~frame["rid"].isin(set(drop))].to_csv(path, index=False)
        settings = {
            "data.source": str(path),
            "data.id_column": "rid",
            "data.label_column": "sentiment",
            "data.text_column": "review",
            "data.tokenizer": str(tok),
            "data.max_length": 8,
            "sisa.epochs": 2,
        }
        url = str(tmp_path / name)
        train(tiny_config(**settings | overrides), url)
        return url

    return make


@pytest.mark.parametrize("model", sorted(MODELS))
def test_forgetting_texts_equals_scratch(texts, model):
    url = texts(**MODELS[model])
    store = SisaStore(url)
    arrays = store.read_data(store.shard_head(0).data)
    assert arrays["X"].dtype == np.int32 and arrays["X"].shape[1:] == (8,)
    cfg = store.config()
    assert cfg.model.vocab_size == len(WORDS) + 2 and cfg.model.pad_id == 0
    assert cfg.data.tokenizer_sha256 and store.classes() == ("neg", "pos")
    ids, shards, slices = layout(url)
    first = str(ids[(shards == 0) & (slices == 0)][0])
    last = str(ids[(shards == 1) & (slices == 2)][0])
    forget(url, [first, last])
    assert_equals_scratch(texts, url, [first, last], **MODELS[model])


def test_a_tokenizer_that_changed_since_training_is_refused_when_the_source_is_read(
    texts, tmp_path
):
    url = texts(**MODELS["textbag"])
    data = SisaStore(url).config().data
    assert len(open_source(data, 0).index()) == 120  # the recorded file reads
    tokenizer_file(tmp_path / "tok.json", [" ".join(WORDS + ["new"])])
    with pytest.raises(DataError, match="changed since this store trained"):
        open_source(data, 0).index()


def test_sisa_predict_tokenizes_a_csv_and_refuses_a_changed_tokenizer(texts, tmp_path, capsys):
    """``sisa predict --input rows.csv`` on a text store tokenizes the text column with the
    recorded tokenizer (the predictions are those of the stored token IDs); once the file
    changed it is refused, saying so, and the store's bytes stay as they were."""
    from orchestrator.cli import main
    from sisa.serving.predictor import Predictor
    from tests.sisa.deletion.test_accept import snapshot

    url = texts(**MODELS["textbag"])
    store = SisaStore(url)
    arrays = store.read_data(store.shard_head(0).data)
    rows = reviews().set_index("rid").loc[arrays["ids"][:6].tolist()].reset_index()
    rows.drop(columns=["sentiment"]).to_csv(tmp_path / "rows.csv", index=False)
    out = tmp_path / "pred.csv"
    argv = ["predict", "--store", url, "--input", str(tmp_path / "rows.csv")]
    assert main([*argv, "--output", str(out)]) == 0, capsys.readouterr().err
    predicted = pd.read_csv(out)
    expected = Predictor(url).predict(arrays["X"][:6], probabilities=True)  # stored token IDs
    assert predicted["id"].tolist() == rows["rid"].tolist()
    assert predicted["label"].tolist() == expected.label_names
    assert np.allclose(predicted[["neg", "pos"]], expected.probabilities, atol=1e-6)
    before = snapshot(url)
    tokenizer_file(tmp_path / "tok.json", [" ".join(WORDS + ["new"])])
    capsys.readouterr()
    assert main([*argv, "--output", str(tmp_path / "again.csv")]) == 2
    err = capsys.readouterr().err
    assert "changed since this store trained" in err and "tok.json" in err
    assert not (tmp_path / "again.csv").exists()
    assert snapshot(url) == before


def test_text_settings_are_checked_before_anything_is_written(texts, tmp_path):
    with pytest.raises(ConfigError, match="model.name: 'textbag' reads texts"):
        train(tiny_config(**MODELS["textbag"]), str(tmp_path / "a"))
    with pytest.raises(ConfigError, match="data.tokenizer"):
        train(tiny_config(**{"data.text_column": "review"}), str(tmp_path / "b"))
    with pytest.raises(ConfigError, match="model.heads"):
        tiny_config(**MODELS["transformer"] | {"model.heads": 3})
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
