"""Text: token IDs from a named tokenizer file, recorded by sha256, never fitted here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from sisa.data.dataset import DataError
from sisa.data.text import load_tokenizer, tokenize
from sisa.training.text_models import TextBag, TextEncoder

CORPUS = ["a good movie", "a bad movie", "great film", "terrible film", "good good film"]


def tokenizer_file(path: Path, corpus: list[str] = CORPUS) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(corpus, trainers.WordLevelTrainer(special_tokens=["[PAD]", "[UNK]"]))
    tok.save(str(path))
    return path


def test_texts_become_padded_int32_token_ids(tmp_path):
    tok = load_tokenizer(str(tokenizer_file(tmp_path / "tok.json")))
    ids = tokenize(tok, ["good film", "a good movie and more words", ""], max_length=4)
    assert ids.dtype == np.int32 and ids.shape == (3, 4)
    assert tok.pad_id == 0 and ids[0, 2:].tolist() == [0, 0] and (ids[2] == 0).all()
    unknown = tok.tokenizer.token_to_id("[UNK]")
    assert ids[1, 3] == unknown  # "and" is not in the vocabulary: truncated after 4 tokens
    assert tok.record() == {"sha256": tok.sha256, "vocab_size": tok.vocab_size, "pad_id": 0}


def test_a_tokenizer_that_changed_since_training_is_refused(tmp_path):
    path = tokenizer_file(tmp_path / "tok.json")
    recorded = load_tokenizer(str(path)).sha256
    assert load_tokenizer(str(path), recorded).sha256 == recorded
    tokenizer_file(path, CORPUS + ["a new word"])
    with pytest.raises(DataError, match="changed since this store trained"):
        load_tokenizer(str(path), recorded)


def test_bad_tokenizer_files_and_texts_are_refused(tmp_path):
    with pytest.raises(DataError, match="no such tokenizer file"):
        load_tokenizer(str(tmp_path / "missing.json"))
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(DataError, match="not a tokenizers JSON file"):
        load_tokenizer(str(tmp_path / "bad.json"))
    tok = load_tokenizer(str(tokenizer_file(tmp_path / "tok.json")))
    with pytest.raises(DataError, match="not strings at rows"):
        tokenize(tok, ["good", 3], max_length=4)


@pytest.mark.parametrize("kind", ["bag", "encoder"])
def test_text_models_ignore_padding_and_are_deterministic(tmp_path, kind):
    tok = load_tokenizer(str(tokenizer_file(tmp_path / "tok.json")))
    short = torch.from_numpy(tokenize(tok, ["good film"], 4)).float()  # [1, 4]
    longer = torch.from_numpy(tokenize(tok, ["good film"], 6)).float()  # more padding
    torch.manual_seed(0)
    if kind == "bag":
        model = TextBag(tok.vocab_size, 3, dim=8)
    else:
        model = TextEncoder(tok.vocab_size, 6, 3, dim=8, heads=2, layers=1)
    model.eval()
    with torch.no_grad():
        padded = torch.cat([short, torch.zeros(1, 2)], dim=1)
        assert torch.equal(padded, longer)
        out = model(longer)
        assert out.shape == (1, 3) and torch.equal(out, model(longer))
        if kind == "bag":  # the mean leaves the padding out: any length gives the same
            assert torch.allclose(model(short), out)
    with pytest.raises(ValueError, match="token IDs must lie in"):
        model(torch.full((1, 6), float(tok.vocab_size)))
