"""The agent: the Mamba block and extractor, SB3 policy pieces, the batched policy; kernels/ holds numba ops."""
