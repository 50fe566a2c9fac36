"""The library API: everything the ``mm`` command does, callable from Python."""

from .clean import clean
from .config import config_from_dict, load_config
from .forecast import forecast
from .pipeline import run
from .report import report
from .split import split
from .train import train

__all__ = ["clean", "config_from_dict", "forecast", "load_config", "report", "run", "split", "train"]
