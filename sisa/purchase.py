"""Synthetic Purchase-100, generated in chunks so that N can be millions.

A stand-in for Purchase-100 (Shokri et al., arXiv 1610.05820): binary purchase vectors of
shoppers drawn from ``num_classes`` sparse profiles (a few favourite items bought often,
the rest rarely); as in the original, labels then come from k-means on the vectors.

Nothing here holds the whole feature matrix. The rows come from one random stream that is
replayed from a saved state, so every pass yields the same bytes: one pass gathers the
k-means sample, one predicts the labels (``labels``), and any number stream the features
(``chunks``). Generated in blocks or at once, the values are identical.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

BLOCK = 8_192  # rows generated at a time: bounds the float32 temporaries to ~20 MB
KMEANS_FIT_MAX = 20_000  # points k-means is fitted on; the rest are only predicted


class SyntheticPurchase:
    """The generator of one synthetic Purchase dataset: IDs 0..n-1, uint8 features."""

    def __init__(self, n: int, seed: int, num_features: int = 600, num_classes: int = 100) -> None:
        if n < 1 or num_features < 1 or num_classes < 2:
            raise ValueError(
                f"need n >= 1, num_features >= 1, num_classes >= 2; got "
                f"{n}, {num_features}, {num_classes}"
            )
        self.n, self.seed = n, seed
        self.num_features, self.num_classes = num_features, num_classes
        rng = np.random.default_rng(seed)
        probs = rng.beta(0.5, 80.0, size=(num_classes, num_features))  # [C, F] background
        favourites = max(1, min(num_features, round(num_features * 0.05)))
        for k in range(num_classes):
            items = rng.choice(num_features, size=favourites, replace=False)
            probs[k, items] = rng.beta(6.0, 3.0, size=favourites)
        self._probs = probs.astype(np.float32)  # [C, F]
        weights = rng.dirichlet(np.full(num_classes, 5.0))  # [C] profile popularity
        self._profile = rng.choice(num_classes, size=n, p=weights)  # [n]
        self._stream = rng.bit_generator.state  # where the features' draws begin
        self._labels: np.ndarray | None = None

    @property
    def ids(self) -> np.ndarray:
        return np.arange(self.n, dtype=np.int64)  # [n]

    def chunks(self, rows: int = 65_536) -> Iterator[tuple[int, np.ndarray]]:
        """``(start, X[start:start + rows])`` in order; X is [m, F] uint8 in {0, 1}."""
        rng = np.random.default_rng()
        rng.bit_generator.state = self._stream
        for start in range(0, self.n, rows):
            stop = min(self.n, start + rows)
            X = np.empty((stop - start, self.num_features), dtype=np.uint8)  # [m, F]
            for s in range(start, stop, BLOCK):
                e = min(stop, s + BLOCK)
                draws = rng.random((e - s, self.num_features), dtype=np.float32)  # [b, F]
                X[s - start : e - start] = draws < self._probs[self._profile[s:e]]
            yield start, X

    def labels(self) -> np.ndarray:
        """[n] int64 labels: k-means clusters, fitted on a bounded random subsample."""
        if self._labels is None:
            self._labels = self._cluster()
        return self._labels

    def _cluster(self) -> np.ndarray:
        from sklearn.cluster import MiniBatchKMeans

        m = min(self.n, KMEANS_FIT_MAX)
        fit_rows = np.sort(np.random.default_rng([self.seed, 1]).choice(self.n, m, replace=False))
        sample = np.empty((m, self.num_features), dtype=np.float32)  # [m, F]
        taken = 0
        for start, X in self.chunks():
            wanted = fit_rows[(fit_rows >= start) & (fit_rows < start + len(X))]
            sample[taken : taken + len(wanted)] = X[wanted - start]
            taken += len(wanted)
        kmeans = MiniBatchKMeans(
            n_clusters=min(self.num_classes, m), n_init=3, random_state=self.seed % 2**32
        )
        kmeans.fit(sample)
        clusters = np.empty(self.n, dtype=np.int64)  # [n]
        for start, X in self.chunks():
            for s in range(0, len(X), BLOCK):
                block = X[s : s + BLOCK].astype(np.float32)  # [b, F]
                clusters[start + s : start + s + len(block)] = kmeans.predict(block)
        _, dense = np.unique(clusters, return_inverse=True)  # dense labels, cluster order
        return dense.astype(np.int64)
