"""mm serve's what-if forecasts: one LightGBM group, its history laid out once.

A what-if request (``future`` rows with other prices, no ``history`` rows)
forecasts the same group from the same history again and again. The batch
path (``kernels.checked_forecast``) rebuilds everything per call: the frame of
history and future rows, its panel and grid, and per recursive step the
design matrix from the whole grid. Here
the history's part is done once per group version (``Prepared``, kept in mm
serve's bounded cache beside the model) and a request pays for its own rows:

- the history's target grid, padded on the left as ``features.lag_features``
  pads it, copied per request and filled step by step with the predictions;
- each step's lags, rolling means and stds read from it by ``features.step_features``,
  the same numpy reductions on the same values as ``lag_features`` (so the
  same floats, bit for bit; tests/test_serve.py compares them);
- LightGBM's single-row prediction (``models.RowPredictor``), set up once per booster, not once per forecast;
- the point and quantile columns by ``kernels.forecast_matrix`` and the checks
  by ``kernels.checked_matrix`` (the batch path's own code), the checks against
  a summary of the history: per series the smallest and largest target and
  numeric known-future value, all that they read of it.

Other models (a baseline or linear model costs little through the batch
path; a pooled LightGBM reads its group's rows as its pool does, on a grid of
the pool's series), requests with ``history`` rows, and a series the model
does not know go the batch path's way: ``Prepared.of`` or ``Prepared.forecast`` return None.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..core.features import (
    FeatureSpec,
    build_panel,
    padded_grid,
    series_codes,
    static_columns,
)
from ..core.kernels import (
    CheckedForecast,
    GroupSpec,
    checked_matrix,
    forecast_matrix,
    group_data,
    last_periods,
    steps_after,
)
from ..core.models import Fitted, RowPredictor, finish, forward, inverse, step_forward
from ..core.timeindex import calendar_features


@dataclass
class Prepared:
    """One LightGBM group's history, ready for many recursive forecasts (``forecast``)."""

    meta: dict
    spec: GroupSpec
    features: FeatureSpec
    with_series: bool
    nonnegative: bool
    transform: str
    first: int  # the grid's first period (the history's first)
    max_back: int  # left padding: the longest lag or window
    padded: np.ndarray  # (series, max_back + history periods): forward(target) where known, NaN elsewhere
    last: np.ndarray  # per series code: its last period in the history (NaN: none)
    summary: pd.DataFrame  # per series its smallest and largest target and numeric known-future value
    predictor: RowPredictor
    calendar_rows: dict = field(default_factory=dict)  # period -> its calendar features (a few per group)
    calendar_width: int = 0

    @classmethod
    def of(cls, history: pd.DataFrame, meta: dict, fitted: Fitted, spec: GroupSpec) -> Prepared | None:
        """None for a model this path does not forecast (the batch path does)."""
        booster = fitted.booster
        if meta["kind"] != "lightgbm" or "pool" in meta or booster is None or booster.num_model_per_iteration() != 1 or not len(history):
            return None  # a pooled model's grid is its whole pool's series (kernels.model_view): the batch path
        info = meta["info"]
        y = history[spec.target_column].to_numpy(dtype=np.float64)
        data = group_data(history, spec, info, y)
        panel = data.panel
        if panel.n_series > len(info["series"]):  # a series the model never saw: its code would depend on the rows
            return None
        transform = fitted.state["transform"]
        grid = data.grid(np.ones(len(history), dtype=bool), forward(y, transform))
        fspec = data.spec
        padded, max_back = padded_grid(grid, fspec)
        last = last_periods(panel.series, panel.period, panel.n_series)
        iteration = fitted.state.get("num_boost_round")
        n_features = fspec.n_history_columns + panel.exog.shape[1] + (panel.calendar.shape[1] if fspec.calendar else 0) + int(data.with_series)
        return cls(
            meta=meta, spec=spec, features=fspec, with_series=data.with_series, nonnegative=data.nonnegative, transform=transform,
            first=data.first, max_back=max_back, padded=padded,
            last=last, summary=_summary(history, spec, fspec),
            predictor=RowPredictor(booster, int(iteration if iteration is not None else booster.best_iteration), n_features),
        )

    def _calendar(self, future: pd.DataFrame, periods: np.ndarray) -> np.ndarray:
        """``calendar_features`` of the rows as build_panel lays them out (columns by name)."""
        new = [i for i, p in enumerate(periods.tolist()) if p not in self.calendar_rows]
        if new:
            values = calendar_features(future[self.spec.time_column].iloc[new], self.spec.time_axis)
            names = sorted(values)
            for j, i in enumerate(new):
                self.calendar_rows[int(periods[i])] = np.array([values[n][j] for n in names], dtype=np.float64)
            self.calendar_width = len(names)
        rows = self.calendar_rows
        return np.array([rows[p] for p in periods.tolist()], dtype=np.float64).reshape(len(periods), self.calendar_width)

    def steps(self, future: pd.DataFrame) -> np.ndarray:
        """``kernels.horizon_steps`` from the history's last periods (NaN: a series without history)."""
        period = future[self.spec.period_column].to_numpy(dtype=np.float64)
        codes = series_codes(future, list(self.spec.series_columns), [tuple(s) for s in self.meta["info"]["series"]])
        return steps_after(self.last, codes, period)

    def forecast(self, future: pd.DataFrame, cap_factor: float | None) -> CheckedForecast | None:
        """``kernels.checked_forecast(history, future, ...)``'s result (None: a series the model
        does not know; the batch path names it)."""
        spec, fspec = self.spec, self.features
        if not len(future):
            return None
        info = self.meta["info"]
        # kernels.group_data's panel of these rows, but for their calendar features: those are
        # a function of the period alone, kept per period (pandas' dt accessors cost 0.1 ms a call)
        panel = build_panel(
            future, list(spec.series_columns), [tuple(s) for s in info["series"]], np.full(len(future), np.nan),
            fspec.numeric_exog, fspec.categorical_exog, info["categories"], spec.time_column, spec.period_column, spec.time_axis, False,
        )
        if panel.n_series > self.padded.shape[0]:
            return None
        n_lag = fspec.n_history_columns
        # the design matrix of every future row (features.design_matrix's columns); lags filled per step
        calendar = self._calendar(future, panel.period) if fspec.calendar else None
        X = np.hstack([np.empty((len(future), n_lag)), static_columns(panel, np.arange(len(future)), fspec, self.with_series, calendar)])
        width = self.max_back + int(panel.period.max()) - self.first + 1
        padded = np.full((self.padded.shape[0], max(width, self.padded.shape[1])), np.nan)
        padded[:, : self.padded.shape[1]] = self.padded
        pos = panel.period - self.first + self.max_back
        predict = self.predictor.predict  # a few rows a step: one row at a time beats Booster.predict's setup
        with np.errstate(all="ignore"), self.predictor.lock:  # overflow is reported as missing rows, as in the batch path
            out = step_forward(padded, X, panel.series, pos, panel.period, fspec, predict, lambda rows: np.array([predict(x) for x in rows]))
            median_like = finish(inverse(out, self.transform), self)  # finish reads .nonnegative
            matrix = forecast_matrix(median_like, None, self.meta, spec, self.nonnegative)
        return checked_matrix(matrix, self.summary, future, self.meta, spec, cap_factor)


def _summary(history: pd.DataFrame, spec: GroupSpec, fspec: FeatureSpec) -> pd.DataFrame:
    """Two rows per series: the smallest and the largest value of the target and of each numeric
    known-future column (NaN where it has none). The checks read per series ranges only, and
    these rows have the same ranges as the whole history."""
    values = [c for c in (spec.target_column, *fspec.numeric_exog) if c in history.columns]
    series = list(spec.series_columns)
    if not series:
        return pd.DataFrame([history[values].min(), history[values].max()]).reset_index(drop=True)
    grouped = history.groupby(series, observed=True, sort=False, dropna=False)[values]
    return pd.concat([grouped.min().reset_index(), grouped.max().reset_index()], ignore_index=True)
