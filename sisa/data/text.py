"""Text as features: a column of strings turned into token IDs by a tokenizer the user names.

The tokenizer is a file in the ``tokenizers`` JSON format, recorded by its sha256 when the
store trains. It is given, never fitted here: a vocabulary fitted on the training corpus
would be a statistic of every point, which a deletion could not take back. A tokenizer
file that changed since training is refused wherever the source is read again.

Each text becomes ``max_length`` int32 token IDs: truncated, then padded with the
tokenizer's ``[PAD]`` token (ID 0 when it has none). Models see the padding as token
``pad_id`` and leave it out (``sisa.training.text_models``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sisa.data.dataset import DataError, read_recorded

PAD_TOKENS = ("[PAD]", "<pad>")


@dataclass(frozen=True, kw_only=True)
class TokenizerFile:
    """A tokenizer as loaded from its file, with what a store records of it."""

    path: str
    sha256: str  # of the file's bytes
    vocab_size: int
    pad_id: int
    tokenizer: object  # a ``tokenizers.Tokenizer``

    def record(self) -> dict[str, object]:
        """What the store keeps: enough to refuse another file and to size a model."""
        return {"sha256": self.sha256, "vocab_size": self.vocab_size, "pad_id": self.pad_id}


def load_tokenizer(path: str, expected_sha256: str | None = None) -> TokenizerFile:
    """Read a tokenizer file; with ``expected_sha256`` (the store's record), refuse a file
    whose bytes changed since training."""
    from tokenizers import Tokenizer

    raw, sha = read_recorded(
        path, "tokenizer", expected_sha256, "its token IDs would mean other words"
    )
    try:
        tokenizer = Tokenizer.from_str(raw.decode("utf-8"))
    except (UnicodeDecodeError, Exception) as exc:  # tokenizers raises bare Exceptions
        raise DataError(f"{path!r} is not a tokenizers JSON file: {exc}") from None
    pad = next((i for t in PAD_TOKENS if (i := tokenizer.token_to_id(t)) is not None), 0)
    return TokenizerFile(
        path=path,
        sha256=sha,
        vocab_size=int(tokenizer.get_vocab_size()),
        pad_id=int(pad),
        tokenizer=tokenizer,
    )


def tokenize(tok: TokenizerFile, texts: Sequence[object], max_length: int) -> np.ndarray:
    """Token IDs of each text, truncated and padded. [n] texts -> [n, max_length] int32."""
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise DataError(f"text values that are not strings at rows {bad[:5]}")
    out = np.full((len(texts), max_length), tok.pad_id, dtype=np.int32)  # [n, L]
    for row, encoding in enumerate(tok.tokenizer.encode_batch(list(texts))):  # type: ignore[attr-defined]
        ids = encoding.ids[:max_length]
        out[row, : len(ids)] = ids
    return out
