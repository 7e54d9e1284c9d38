"""Shared pieces of the sam-btcv experiment suite: data, models, prompts, cache, metrics, training."""
