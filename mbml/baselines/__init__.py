"""The baselines the paper compares MBML with (baselines spec): Contextual BCQ and Batch PEARL."""
