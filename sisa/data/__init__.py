"""Points as a user brings them: sources, the in-memory dataset, the split into
shards and slices, and the deletion-risk scores that steer placement."""
