"""The autoregressive per-token TRM language model: model, KV cache, decoding, training, generation."""
