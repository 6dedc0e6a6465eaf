"""The evidence that deletions hold: the audit of a store, the bitwise verification by
retraining, the status report, and forgetting measured against the approximate methods."""
