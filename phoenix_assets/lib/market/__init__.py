"""The order book: the numba book kernel, 1s snapshots -> 1m OFI bars, and the same bars live."""
