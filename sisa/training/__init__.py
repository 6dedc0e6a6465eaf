"""Training shard models slice by slice: the jobs, the loop, the models, the
epoch schedule and the determinism environment that makes a retrain bitwise equal."""
