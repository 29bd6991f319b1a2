"""Peer engines for the benchmarks (transformers.js, ...) and the model exports they need."""
