"""Training-side code: dataset readers, metrics, procedural data, training loops."""
