"""The library API: everything the ``mm`` command does, callable from Python."""

from .clean import clean
from .config import load_config
from .forecast import forecast
from .pipeline import run
from .split import split
from .train import train

__all__ = ["clean", "forecast", "load_config", "run", "split", "train"]
