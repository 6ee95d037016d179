"""Data: the built-in `emoji-zh-en` set, a generic JSONL manifest loader, and the pair sampler for training."""
