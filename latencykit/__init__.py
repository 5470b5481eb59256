"""latencykit: hardware-aware latency lookup tables, predictors and latency-constrained NAS.

The public API (`latencykit.api`) is reachable from here, loaded on first use so that `arch`,
`layers` and `space` stay importable without torch:

    >>> import latencykit as lk
    >>> lk.load_space("autovit-xxs").name
    'autovit-xxs'
"""

from __future__ import annotations

from latencykit.version import __version__

_API = ("load_space", "get_device", "profile", "load_table", "get_predictor", "predictor_for", "fit_predictor",
        "predict", "measure_model", "profile_kernels", "predict_model", "measure_subnets", "validate", "search", "export_subnet", "Prediction", "Budget", "SearchConfig")
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        from latencykit import api

        return getattr(api, name)
    raise AttributeError(f"module 'latencykit' has no attribute {name!r}")
