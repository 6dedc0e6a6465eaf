"""Predictions from the shard models: loading the ensemble, running it, and
aggregating its outputs for the HTTP predictor."""
