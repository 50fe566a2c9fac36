"""Simulated orange-juice sales in the shape of the Many Models accelerator's sample.

Columns WeekStarting, Store, Brand, Quantity, Advert, Price, Revenue; weekly,
weeks starting on Thursdays from 1990-06-14. Each store x brand has its own
level, price elasticity and advert lift, on top of yearly seasonality, a
Christmas bump, promotional price cuts and multiplicative noise; about 1% of
weeks are missing (gaps inside series). Optional future weeks carry the planned
Price and Advert but no Quantity, which is what a forecast is asked for.

Generated column by column with numpy, so 3,991 stores (11,973 series, 1.45 M
rows) take a couple of seconds.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

BRANDS = ("dominicks", "minute.maid", "tropicana")
BASE_PRICE = {"dominicks": 1.99, "minute.maid": 2.49, "tropicana": 2.79}
FIRST_WEEK = pd.Timestamp("1990-06-14")


def generate_oj_sales(
    stores: int = 10,
    brands: int = 3,
    weeks: int = 121,
    future_weeks: int = 0,
    gap_rate: float = 0.01,
    seed: int = 0,
    first_store: int = 1000,
) -> pd.DataFrame:
    if stores < 1 or brands < 1 or weeks < 1:
        raise ValueError("stores, brands and weeks must be >= 1")
    rng = np.random.default_rng(seed)
    brand_names = [BRANDS[i] if i < len(BRANDS) else f"brand{i + 1}" for i in range(brands)]
    n_series = stores * brands
    total_weeks = weeks + future_weeks
    store_ids = np.repeat(np.arange(first_store, first_store + stores), brands)
    brand_idx = np.tile(np.arange(brands), stores)
    base_price = np.array([BASE_PRICE.get(b, 2.29) for b in brand_names])[brand_idx]

    # per-series parameters
    level = np.exp(rng.normal(9.4, 0.45, n_series))  # ~12,000 units a week
    elasticity = rng.normal(-2.6, 0.45, n_series)
    advert_lift = rng.uniform(1.10, 1.45, n_series)
    store_price = rng.uniform(0.92, 1.08, stores)[np.repeat(np.arange(stores), brands)]
    season_amp = rng.uniform(0.05, 0.20, n_series)
    season_phase = rng.uniform(0, 2 * np.pi, n_series)
    trend = rng.normal(0.0, 0.0015, n_series)

    w = np.arange(total_weeks)
    dates = FIRST_WEEK + pd.to_timedelta(7 * w, unit="D")
    week_of_year = ((dates.day_of_year.to_numpy() - 1) // 7)
    christmas = np.isin(week_of_year, [50, 51]).astype(float)

    # promotions: price cuts and adverts, somewhat correlated
    on_promo = rng.random((n_series, total_weeks)) < 0.18
    cut = rng.uniform(0.10, 0.30, (n_series, total_weeks))
    price = base_price[:, None] * store_price[:, None] * np.where(on_promo, 1 - cut, 1.0)
    price *= 1 + rng.normal(0, 0.01, (n_series, total_weeks))
    price = np.round(price, 2)
    advert = (rng.random((n_series, total_weeks)) < np.where(on_promo, 0.6, 0.15)).astype(int)
    ref_price = base_price[:, None] * store_price[:, None]

    seasonal = 1 + season_amp[:, None] * np.sin(2 * np.pi * w[None, :] / 52.18 + season_phase[:, None])
    seasonal *= 1 + 0.25 * christmas[None, :]
    demand = (
        level[:, None]
        * seasonal
        * np.exp(trend[:, None] * w[None, :])
        * (price / ref_price) ** elasticity[:, None]
        * np.where(advert == 1, advert_lift[:, None], 1.0)
        * np.exp(rng.normal(0, 0.12, (n_series, total_weeks)))
    )
    quantity = np.round(demand).astype(float)
    quantity[:, weeks:] = np.nan

    keep = np.ones((n_series, total_weeks), dtype=bool)
    if gap_rate > 0 and weeks > 10:
        inner = rng.random((n_series, weeks - 8)) < gap_rate
        keep[:, 4 : weeks - 4] = ~inner

    frame = pd.DataFrame(
        {
            "WeekStarting": np.tile(dates.to_numpy(), n_series),
            "Store": np.repeat(store_ids, total_weeks),
            "Brand": np.repeat(np.array(brand_names, dtype=object)[brand_idx], total_weeks),
            "Quantity": quantity.ravel(),
            "Advert": advert.ravel(),
            "Price": price.ravel(),
        }
    )
    frame["Revenue"] = np.round(frame["Quantity"] * frame["Price"], 2)
    return frame.loc[keep.ravel()].reset_index(drop=True)


def data_settings(path: str | Path) -> dict:
    """The ``data`` section of a config reading a generated sample at ``path`` (its columns, the
    prices and adverts as known-future columns, revenue dropped: it is quantity x price)."""
    return {
        "path": str(path),
        "time_column": "WeekStarting",
        "target_column": "Quantity",
        "group_columns": ["Store", "Brand"],
        "known_future_columns": ["Price", "Advert"],
        "drop_columns": ["Revenue"],
    }


def write_sample(frame: pd.DataFrame, output: str | Path, fmt: str = "csv", per_group_files: bool = False) -> list[Path]:
    """Write one table (``output`` is a file) or one file per store x brand (``output`` is a folder)."""
    output = Path(output)
    written: list[Path] = []
    if per_group_files:
        output.mkdir(parents=True, exist_ok=True)
        for (store, brand), part in frame.groupby(["Store", "Brand"], sort=True):
            path = output / f"Store{store}_{brand}.{fmt}"
            _write_one(part, path, fmt)
            written.append(path)
        return written
    output.parent.mkdir(parents=True, exist_ok=True)
    _write_one(frame, output, fmt)
    return [output]


def _write_one(frame: pd.DataFrame, path: Path, fmt: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    if fmt == "parquet":
        frame.to_parquet(tmp, index=False)
    else:
        out = frame.copy()
        out["WeekStarting"] = out["WeekStarting"].dt.strftime("%Y-%m-%d")
        out.to_csv(tmp, index=False, float_format="%.10g")
    os.replace(tmp, path)
