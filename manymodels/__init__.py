"""manymodels: train, store and serve one forecasting model per group.

The library API mirrors the ``mm`` command line::

    import manymodels as mm
    config = mm.load_config("configs/oj_sales.yaml", overrides=["train.horizon=8"])
    mm.split(config)
    result = mm.train(config, groups=["Store=1000"])
    mm.forecast(config)
    mm.report(config)          # <datastore>/outputs/report.html
    mm.export(config)          # <datastore>/exports/onnx/ (the onnx extra)
"""

from ._version import __version__
from .api import clean, config_from_dict, export, forecast, load_config, report, run, split, train
from .config import Config
from .errors import ConfigError, InputDataError, MMError, UpstreamMissing
from .sample import generate_oj_sales

__all__ = [
    "__version__",
    "Config",
    "ConfigError",
    "InputDataError",
    "MMError",
    "UpstreamMissing",
    "clean",
    "config_from_dict",
    "export",
    "forecast",
    "generate_oj_sales",
    "load_config",
    "report",
    "run",
    "split",
    "train",
]
