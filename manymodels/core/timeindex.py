"""Time values -> integer periods on a regular grid.

Every timestamp maps to an integer period so that "the previous week" is
``period - 1`` whether or not that week is in the data: a missing week stays a
gap and lags never silently shift across it. Three kinds of axis:

- ``int``: the time column already is a period number (week 40, 41, ...);
- ``fixed``: a fixed step (days, weeks, hours), periods counted from the epoch;
- ``month``: calendar months, quarters or years (steps of 1, 3 or 12 months).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd

from ..errors import InputDataError, examples

NS_PER_DAY = 86_400 * 10**9
_MONTH_LABELS = {1: "MS", 3: "QS", 12: "YS"}
_DEFAULT_SEASON = {  # step (ns) -> periods per season
    NS_PER_DAY: 7,
    7 * NS_PER_DAY: 52,
    3_600 * 10**9: 24,
    1_800 * 10**9: 48,
    900 * 10**9: 96,
}


@dataclass(frozen=True)
class TimeAxis:
    kind: str  # "int" | "fixed" | "month"
    step: int  # int: units per period; fixed: nanoseconds; month: months per period
    offset: int  # int/fixed: value = offset + period * step
    label: str  # human-readable frequency ('W-THU', 'D', 'MS', 'int')
    season_length: int | None
    # fixed steps of whole days over zone-aware times count in local wall-clock time: a week of
    # local midnights stays a week across daylight saving (in UTC it would be 167 or 169 hours)
    wall: bool = False

    def to_periods(self, values: pd.Series) -> np.ndarray:
        """Periods of already-parsed time values (see ``parse_times``)."""
        if self.kind == "int":
            raw = values.to_numpy(dtype=np.int64)
            return (raw - self.offset) // self.step
        if self.kind == "fixed":
            raw = _wall_ns(values) if self.wall else _as_ns(values)
            return (raw - self.offset) // self.step
        months = month_numbers(values)
        return months // self.step

    def off_grid(self, values: pd.Series) -> np.ndarray:
        """Boolean mask of values that are not on this axis' grid."""
        if self.kind == "int":
            return (values.to_numpy(dtype=np.int64) - self.offset) % self.step != 0
        if self.kind == "fixed":
            return ((_wall_ns(values) if self.wall else _as_ns(values)) - self.offset) % self.step != 0
        ts = _naive(values)
        off = month_numbers(values) % self.step != 0
        if self.label.endswith("E"):
            return off | ~ts.dt.is_month_end.to_numpy()
        return off | (ts.dt.day.to_numpy() != ts.dt.day.to_numpy()[0])

    def to_dict(self) -> dict:
        out = {"kind": self.kind, "step": self.step, "offset": self.offset, "label": self.label, "season_length": self.season_length}
        if self.wall:
            out["wall"] = True
        return out

    @classmethod
    def from_dict(cls, d: dict) -> TimeAxis:
        return cls(**d)


def parse_times(values: pd.Series, column: str, source: str, time_format: str | None = None) -> pd.Series:
    """Integers stay integers; everything else becomes datetime64. Raises InputDataError."""
    if pd.api.types.is_bool_dtype(values):
        raise InputDataError(f"{source}: time column {column!r} holds booleans, not times")
    if pd.api.types.is_integer_dtype(values):
        return values.astype(np.int64)
    if pd.api.types.is_float_dtype(values):
        finite = values.dropna()
        if len(finite) and (finite % 1 == 0).all() and values.notna().all():
            return values.astype(np.int64)
    if isinstance(values.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_any_dtype(values):
        parsed = values
    else:
        text = values.astype("string")
        try:
            parsed = pd.to_datetime(text, format=time_format, errors="coerce")
        except (ValueError, TypeError) as exc:
            if "timezone" in str(exc).lower() or "time zone" in str(exc).lower() or "offset" in str(exc).lower():
                raise InputDataError(
                    f"{source}: time column {column!r} mixes time zones (e.g. {examples(text.dropna().unique()[:3])})",
                    "convert the times to one time zone (or to UTC) before running mm",
                ) from None
            raise InputDataError(
                f"{source}: cannot parse time column {column!r}: {exc}",
                "set data.time_format (e.g. '%d/%m/%Y') to the format of the values",
            ) from None
        if parsed.dtype == object:
            raise InputDataError(
                f"{source}: time column {column!r} mixes time zones (e.g. {examples(text.dropna().unique()[:3])})",
                "convert the times to one time zone (or to UTC) before running mm",
            )
        bad = parsed.isna() & text.notna()
        if bad.any() and time_format is None:
            # pandas takes the format of the first value; ISO dates with and without a time of day mix fine
            try:
                iso = pd.to_datetime(text, format="ISO8601", errors="coerce")
            except (ValueError, TypeError):
                iso = None
            if iso is not None and iso.dtype != object and int((iso.isna() & text.notna()).sum()) < int(bad.sum()):
                parsed, bad = iso, iso.isna() & text.notna()
        if bad.any():
            _raise_if_mixed_zones(parsed, text, bad, column, source)
            _raise_if_mixed_formats(parsed, text, bad, column, source)
            raise InputDataError(
                f"{source}: {int(bad.sum())} value(s) of time column {column!r} are not dates: {examples(text[bad].unique())}",
                "fix those rows, or set data.time_format (e.g. '%Y-%m-%d') if the format is unusual",
            )
    missing = parsed.isna()
    if missing.any():
        raise InputDataError(
            f"{source}: {int(missing.sum())} row(s) have an empty time column {column!r}",
            "every row needs a time value; remove or fill those rows",
        )
    return parsed


def _raise_if_mixed_zones(parsed: pd.Series, text: pd.Series, bad: pd.Series, column: str, source: str) -> None:
    """Values that are dates on their own but not beside the others: some carry a time zone, some do not."""
    good = text[parsed.notna()]
    if good.empty:
        return
    aware = getattr(parsed.dtype, "tz", None) is not None
    for value in text[bad].unique()[:50]:
        try:
            stamp = pd.Timestamp(str(value))
        except (ValueError, TypeError):
            continue
        if stamp is not pd.NaT and (stamp.tzinfo is not None) != aware:
            with_zone, without = (good.iloc[0], value) if aware else (value, good.iloc[0])
            raise InputDataError(
                f"{source}: time column {column!r} mixes times with a time zone or UTC offset ({str(with_zone)!r}) "
                f"and times without one ({str(without)!r})",
                "write every time the same way: all with their UTC offset, all in UTC, or all as local times without an offset",
            )


def _raise_if_mixed_formats(parsed: pd.Series, text: pd.Series, bad: pd.Series, column: str, source: str) -> None:
    """Values that are dates on their own, written in another format than the first one."""
    good = text[parsed.notna()]
    if good.empty:
        return
    dates = []
    for value in text[bad].unique()[:20]:
        try:
            if pd.Timestamp(str(value)) is not pd.NaT:
                dates.append(value)
        except (ValueError, TypeError):
            continue
    if dates:
        day_first = pd.to_datetime(text, dayfirst=True, errors="coerce")
        if day_first.notna().sum() == text.notna().sum():
            raise InputDataError(
                f"{source}: time column {column!r} holds day/month/year dates such as {str(dates[0])!r}, but "
                f"{str(good.iloc[0])!r} reads as month/day/year: the order of day and month is ambiguous",
                "set data.time_format: '%d/%m/%Y' (or the format your dates use)",
            )
        raise InputDataError(
            f"{source}: {int(bad.sum())} value(s) of time column {column!r} are written in another format than "
            f"the others (e.g. {str(good.iloc[0])!r}): {examples(dates)}",
            "write every time in one format, or set data.time_format (e.g. '%d/%m/%Y') to the format of the values",
        )


def infer_axis(times: pd.Series, series_ids: np.ndarray, frequency: str | None, season_length: int | None, column: str, source: str) -> TimeAxis:
    """The time axis of parsed ``times``; ``frequency`` (a pandas alias) wins over inference."""
    summary = TimeSummary.of(times, series_ids)
    return summary.axis(frequency, season_length, column, source)


class TimeSummary:
    """What inferring a time axis needs, mergeable across chunks of the data.

    The distinct time values with their row counts, and the histogram of the
    differences between consecutive times inside each series. Both are bounded
    by the length of the time axis, not by the number of rows or series, so a
    split can gather them batch by batch (times) and bucket by bucket (series
    differences, computed where each series is whole).
    """

    def __init__(self, kind: str, tz, times: np.ndarray, counts: np.ndarray, diffs: np.ndarray, diff_counts: np.ndarray):
        self.kind = kind  # "int" or "datetime"
        self.tz = tz
        self.times, self.counts = times, counts  # int64: the value, or nanoseconds since the epoch (UTC)
        self.diffs, self.diff_counts = diffs, diff_counts

    @classmethod
    def of(cls, times: pd.Series, series_ids: np.ndarray | None = None) -> TimeSummary:
        kind, tz = time_kind(times)
        values = time_values(times)
        distinct, counts = np.unique(values, return_counts=True)
        if series_ids is None:
            diffs = counts_d = np.empty(0, dtype=np.int64)
        else:
            diffs, counts_d = np.unique(series_diffs(values, series_ids), return_counts=True)
        return cls(kind, tz, distinct, counts, diffs, counts_d)

    def merge(self, other: TimeSummary) -> TimeSummary:
        times, counts = _merge_counts(self.times, self.counts, other.times, other.counts)
        diffs, diff_counts = _merge_counts(self.diffs, self.diff_counts, other.diffs, other.diff_counts)
        return TimeSummary(self.kind, self.tz, times, counts, diffs, diff_counts)

    def with_diffs(self, diffs: np.ndarray, diff_counts: np.ndarray) -> TimeSummary:
        merged = _merge_counts(self.diffs, self.diff_counts, np.asarray(diffs, dtype=np.int64), np.asarray(diff_counts, dtype=np.int64))
        return TimeSummary(self.kind, self.tz, self.times, self.counts, *merged)

    def series(self, values: np.ndarray | None = None) -> pd.Series:
        """Time values (the distinct ones by default) as the parsed column would hold them."""
        values = self.times if values is None else values
        if self.kind == "int":
            return pd.Series(values, dtype=np.int64)
        if self.tz is not None:
            return pd.Series(pd.to_datetime(values, unit="ns", utc=True)).dt.tz_convert(self.tz)
        return pd.Series(np.asarray(values, dtype=np.int64).astype("datetime64[ns]"))

    def axis(self, frequency: str | None, season_length: int | None, column: str, source: str) -> TimeAxis:
        times = self.series()
        if self.kind == "int":
            step = max(int(np.gcd.reduce(self.diffs)) if len(self.diffs) else 1, 1)
            offset = int(self.times.min() % step) if len(self.times) else 0
            return TimeAxis("int", step, offset, "int" if step == 1 else f"int/{step}", season_length)
        if frequency:
            axis = _axis_from_alias(frequency, times, season_length, self.counts)
        else:
            axis = _infer_datetime_axis(times, self.diffs, self.diff_counts, season_length, column, source, self.counts)
        bad = axis.off_grid(times)
        if bad.any():
            hint = "align the times to one frequency (e.g. all weeks starting on the same weekday), or set data.frequency"
            if self.tz is not None:
                hint += (
                    f"; the times carry time zones or UTC offsets and were compared in {self.tz}: if the offset changes "
                    "during the year (daylight saving), write them as local times without an offset"
                )
            raise InputDataError(
                f"{source}: {int(self.counts[bad].sum())} time value(s) in {column!r} are off the {axis.label} grid "
                f"(irregular frequency): {examples(pd.Series(times[bad]).astype(str).unique())}",
                hint,
            )
        return axis


def time_kind(times: pd.Series) -> tuple[str, object]:
    if pd.api.types.is_integer_dtype(times):
        return "int", None
    return "datetime", getattr(times.dtype, "tz", None)


def time_values(times: pd.Series) -> np.ndarray:
    """int64 values of parsed times: the number itself, or nanoseconds since the epoch (UTC)."""
    if pd.api.types.is_integer_dtype(times):
        return times.to_numpy(dtype=np.int64)
    return _as_ns(times)


def _merge_counts(a: np.ndarray, ac: np.ndarray, b: np.ndarray, bc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    values, inverse = np.unique(np.concatenate([a, b]).astype(np.int64), return_inverse=True)
    counts = np.bincount(inverse, weights=np.concatenate([ac, bc]), minlength=len(values)).astype(np.int64)
    return values, counts


def calendar_features(times: pd.Series, axis: TimeAxis) -> dict[str, np.ndarray]:
    """Calendar features of each row, chosen by the frequency."""
    if axis.kind == "int":
        if axis.season_length and axis.season_length > 1:
            periods = axis.to_periods(times)
            return {"season_position": (periods % axis.season_length).astype(np.float64)}
        return {}
    ts = _naive(times)
    out: dict[str, np.ndarray] = {}
    if axis.kind == "month":
        if axis.step == 1:
            out["month"] = ts.dt.month.to_numpy(dtype=np.float64)
        elif axis.step == 3:
            out["quarter"] = ts.dt.quarter.to_numpy(dtype=np.float64)
        return out
    if axis.step < NS_PER_DAY:
        out["hour"] = ts.dt.hour.to_numpy(dtype=np.float64)
        out["day_of_week"] = ts.dt.day_of_week.to_numpy(dtype=np.float64)
    elif axis.step < 7 * NS_PER_DAY:
        out["day_of_week"] = ts.dt.day_of_week.to_numpy(dtype=np.float64)
        out["day_of_month"] = ts.dt.day.to_numpy(dtype=np.float64)
        out["month"] = ts.dt.month.to_numpy(dtype=np.float64)
    else:
        out["week_of_year"] = ((ts.dt.day_of_year.to_numpy() - 1) // 7 + 1).astype(np.float64)
        out["month"] = ts.dt.month.to_numpy(dtype=np.float64)
    return out


@lru_cache(maxsize=64)
def calendar_names(axis: TimeAxis) -> tuple[str, ...]:
    """The names of ``calendar_features``' columns for an axis, sorted (as the feature matrix
    orders them). They depend on the axis alone: asked once per axis, not computed per group
    (pandas' ``.dt`` accessors cost a few tenths of a millisecond even on one row)."""
    sample = pd.Series([axis.offset], dtype="int64") if axis.kind == "int" else pd.Series(pd.to_datetime(["2001-01-01"]))
    return tuple(sorted(calendar_features(sample, axis)))


def format_time(value, axis: TimeAxis) -> str:
    if axis.kind == "int":
        return str(int(value))
    ts = pd.Timestamp(value)
    if ts.hour == 0 and ts.minute == 0 and ts.second == 0 and ts.tzinfo is None:
        return ts.strftime("%Y-%m-%d")
    return ts.isoformat()


# -- helpers -----------------------------------------------------------------

def _phase(ns: np.ndarray, step: int, counts: np.ndarray | None) -> int:
    """Where the grid is anchored: the offset (time mod step) most rows share, so one odd time
    is reported as off the grid, not every time but it."""
    if not len(ns):
        return 0
    phases, inverse = np.unique(ns % step, return_inverse=True)
    weights = np.bincount(inverse, weights=counts if counts is not None and len(counts) == len(ns) else None)
    return int(phases[np.argmax(weights)])


def _infer_datetime_axis(times: pd.Series, diffs: np.ndarray, diff_counts: np.ndarray, season_length: int | None, column: str, source: str, counts: np.ndarray | None = None) -> TimeAxis:
    """The most common step between consecutive times of a series decides the frequency."""
    ns = _as_ns(times)
    if len(diffs) == 0:
        raise InputDataError(
            f"{source}: cannot infer the frequency of {column!r}: no series has two distinct times",
            "set data.frequency (e.g. W-THU, D, MS)",
        )
    mode = int(diffs[np.argmax(diff_counts)])
    days = mode / NS_PER_DAY
    if 28 <= days <= 31:
        return _month_axis(times, 1, season_length)
    if 89 <= days <= 92:
        return _month_axis(times, 3, season_length)
    if 365 <= days <= 366:
        return _month_axis(times, 12, season_length)
    step = mode
    wall = _zoned(times) and step % NS_PER_DAY == 0
    ns = _wall_ns(times) if wall else ns
    offset = _phase(ns, step, counts)
    anchor = int(ns[ns % step == offset].min())
    return TimeAxis("fixed", step, offset, _fixed_label(step, anchor), season_length or _DEFAULT_SEASON.get(step), wall)


def _axis_from_alias(frequency: str, times: pd.Series, season_length: int | None, counts: np.ndarray | None = None) -> TimeAxis:
    from pandas.tseries.frequencies import to_offset

    try:
        offset = to_offset(frequency)
    except ValueError:
        from ..errors import ConfigError

        raise ConfigError(f"data.frequency: {frequency!r} is not a pandas frequency alias", "use e.g. D, W-THU, MS, QS, YS, h") from None
    name = type(offset).__name__
    if name in {"MonthBegin", "MonthEnd"}:
        return _month_axis(times, offset.n, season_length, end=name == "MonthEnd")
    if name in {"QuarterBegin", "QuarterEnd"}:
        return _month_axis(times, 3 * offset.n, season_length, end=name == "QuarterEnd")
    if name in {"YearBegin", "YearEnd"}:
        return _month_axis(times, 12 * offset.n, season_length, end=name == "YearEnd")
    if name == "Week":
        step = 7 * NS_PER_DAY * offset.n
    else:
        try:
            step = int(pd.Timedelta(offset).value)
        except (ValueError, TypeError):
            from ..errors import ConfigError

            raise ConfigError(f"data.frequency: {frequency!r} has no fixed length (business days are not supported)", "use a fixed frequency such as D or W-MON") from None
    wall = _zoned(times) and step % NS_PER_DAY == 0
    ns = _wall_ns(times) if wall else _as_ns(times)
    return TimeAxis("fixed", step, _phase(ns, step, counts), frequency, season_length or _DEFAULT_SEASON.get(step), wall)


def _month_axis(times: pd.Series, months: int, season_length: int | None, end: bool | None = None) -> TimeAxis:
    ts = _naive(times)
    if end is None:
        end = bool(ts.dt.is_month_end.all()) and not bool((ts.dt.day == 1).all())
    label = _MONTH_LABELS.get(months, f"{months}MS")
    if end:
        label = label[:-1] + "E"
    default_season = {1: 12, 3: 4}.get(months)
    return TimeAxis("month", months, 0, label, season_length or default_season)


def _fixed_label(step: int, first_ns: int) -> str:
    if step == 7 * NS_PER_DAY:
        weekday = pd.Timestamp(first_ns).day_name()[:3].upper()
        return f"W-{weekday}"
    if step % NS_PER_DAY == 0:
        days = step // NS_PER_DAY
        return "D" if days == 1 else f"{days}D"
    seconds = step // 10**9
    if step % (3600 * 10**9) == 0:
        hours = seconds // 3600
        return "h" if hours == 1 else f"{hours}h"
    if step % (60 * 10**9) == 0:
        return f"{seconds // 60}min"
    return f"{seconds}s"


def series_diffs(values: np.ndarray, series_ids: np.ndarray) -> np.ndarray:
    """Positive differences between consecutive distinct times inside each series."""
    order = np.lexsort((values, series_ids))
    v, s = values[order], series_ids[order]
    d = np.diff(v)
    same = s[1:] == s[:-1]
    d = d[same]
    return d[d > 0]


def _naive(times: pd.Series) -> pd.Series:
    ts = pd.Series(times)
    if isinstance(ts.dtype, pd.DatetimeTZDtype):
        ts = ts.dt.tz_localize(None)
    return ts


def _zoned(times: pd.Series) -> bool:
    return isinstance(pd.Series(times).dtype, pd.DatetimeTZDtype)


def _wall_ns(times: pd.Series) -> np.ndarray:
    """Nanoseconds of the local wall-clock times (the zone dropped, not converted)."""
    return _naive(times).to_numpy(dtype="datetime64[ns]").astype(np.int64)


def _as_ns(times: pd.Series) -> np.ndarray:
    ts = pd.Series(times)
    if isinstance(ts.dtype, pd.DatetimeTZDtype):
        ts = ts.dt.tz_convert("UTC").dt.tz_localize(None)
    return ts.to_numpy(dtype="datetime64[ns]").astype(np.int64)


def month_numbers(times: pd.Series) -> np.ndarray:
    ts = _naive(times)
    return (ts.dt.year.to_numpy(dtype=np.int64) * 12 + ts.dt.month.to_numpy(dtype=np.int64) - 1)

