"""manymodels: train, store and serve one forecasting model per group.

The library API mirrors the ``mm`` command line::

    import manymodels as mm
    config = mm.load_config("configs/oj_sales.yaml", overrides=["train.horizon=8"])
    mm.split(config)
    result = mm.train(config, groups=["Store=1000"])
    mm.forecast(config)
    mm.report(config)          # <datastore>/outputs/report.html
    mm.export(config)          # <datastore>/exports/onnx/ (the onnx extra)
    mm.train(config, jobs=4, allow_reuse=False)   # run options, or options=mm.RunOptions(...)
    mm.accuracy(config)        # stored forecasts scored against later actuals
    mm.list_runs(config), mm.show_run(config, run_id), mm.list_models(config)
"""

from ._version import __version__
from .api import (
    RunOptions,
    accuracy,
    clean,
    config_from_dict,
    export,
    forecast,
    list_models,
    list_runs,
    load_config,
    report,
    run,
    show_run,
    split,
    train,
)
from .config import Config
from .errors import ConfigError, InputDataError, MMError, UpstreamMissing
from .extras.sample import generate_oj_sales

__all__ = [
    "__version__",
    "Config",
    "ConfigError",
    "InputDataError",
    "MMError",
    "RunOptions",
    "UpstreamMissing",
    "accuracy",
    "clean",
    "config_from_dict",
    "export",
    "forecast",
    "generate_oj_sales",
    "list_models",
    "list_runs",
    "load_config",
    "report",
    "run",
    "show_run",
    "split",
    "train",
]
