"""Continuous batching over one model thread: jobs join the running decode batch between steps and
leave it when done; a byte-bounded prompt cache shares KV snapshots of common prompt prefixes.
Used by ``gemma4 serve`` (HTTP) and ``gemma4 caption`` (folders)."""
