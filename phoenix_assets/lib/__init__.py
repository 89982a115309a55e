"""Pure computation for Phoenix (DBN I/O, numba kernels, polars transforms). No dagster imports."""
