"""The benchmarks' data, made once per run and read by every store that uses it.

Synthetic Purchase labels its rows by k-means, which takes about a minute at N = 200k on
two cores. A grid trains many stores on the same rows, so each (source, n, seed) is
generated once, written as ``.npz`` into the run's folder, and every store's config points
``data.source`` at that file. The file holds exactly what the built-in source returns (IDs,
features, labels), so a store trained from it equals one trained from the source.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from sisa.data.loaders import load_source


class DataCache:
    """Turns a dataset's overrides into ones that read a file written once under ``root``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.files: dict[tuple[str, int, int], str] = {}

    def overrides(self, dataset: dict[str, Any], seed: int = 0) -> dict[str, Any]:
        """``dataset`` (``data.source`` and ``data.n``) for ``sisa.seed = seed``: built-in
        sources that are cheap stay as they are; generated ones become a file path."""
        source = dataset["data.source"]
        if source != "synthetic-purchase":
            return dict(dataset)
        key = (source, int(dataset["data.n"]), seed)
        if key not in self.files:
            ds = load_source(source, key[1], seed)
            path = self.root / f"{source}-{key[1]}-{seed}.npz"
            np.savez(path, ids=ds.ids, X=ds.X, y=ds.y)
            self.files[key] = str(path)
        rest = {k: v for k, v in dataset.items() if k not in ("data.source", "data.n")}
        return rest | {"data.source": self.files[key], "data.num_classes": 100, "sisa.seed": seed}
