"""The store's bytes as SISA sees them: the layout of its paths, the artifacts under
them (heads, data, stage checkpoints), the deletion journal and the tombstones."""
