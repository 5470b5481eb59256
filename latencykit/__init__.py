"""latencykit: hardware-aware latency lookup tables, predictors and latency-constrained NAS."""
__version__ = "0.1.0"
