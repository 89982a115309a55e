"""Hand-written numba kernels of the Mamba block (selective scan, causal conv + SiLU), like mamba_ssm's ops/."""
