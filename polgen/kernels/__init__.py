"""numba kernels: contiguous numpy arrays in, arrays out; no Polars, no files."""
