"""Runtime: backends, predictor, pre/post-processing (depends on geometry and metadata only)."""
