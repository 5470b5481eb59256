"""latencykit: hardware-aware latency lookup tables, predictors and latency-constrained NAS.

The public API (`latencykit.api`) is reachable from here, loaded on first use so that `arch`,
`layers` and `space` stay importable without torch:

    >>> import latencykit as lk
    >>> lk.load_space("autovit-xxs").name
    'autovit-xxs'
"""

from __future__ import annotations

from latencykit.version import __version__

_API = ("Budget", "SearchConfig", "Prediction", "describe_table", "export_subnet", "fit_predictor", "get_device",
        "get_predictor", "list_devices", "load_space", "load_table", "measure_model", "measure_set", "measure_subnets", "predict",
        "predict_many", "predict_model", "predictor_for", "profile", "profile_kernels", "read_archs", "search", "validate")
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        from latencykit import api

        return getattr(api, name)
    raise AttributeError(f"module 'latencykit' has no attribute {name!r}")
