"""Why a reconciliation loses to the base forecasts on tourism_au: the numbers behind the README's
"Why MinT lost to the base forecasts on tourism_au".

    python bench/hierarchy.py                  # first: trains every node, keeps its datastore
    python bench/hierarchy_diagnose.py         # reads that datastore; --ets adds the literature setup

It reads bench/out/hierarchy/store_tourism (hierarchy_forecast.csv of the last forecast run,
training_output.csv, each node's kept backtest errors) and prints, per test quarter:

- the bias of the bottom series' base forecasts by the model they chose (a log-space model
  forecasts something like a median; summing medians of skewed series under-forecasts);
- every level's sum of base forecasts against the total's base forecast and the actual;
- the RMS of the total's errors against that of the bottom series' summed errors, in the
  backtest train kept (what wls_var and mint_shrink weigh by) and in the test quarters.

``--ets`` fits statsforecast's AutoETS on every node (the FPP3 setup, about 15 s) and
reconciles its forecasts with bottom_up and with mint_shrink on its one-step in-sample
residuals, through manymodels.core.reconcile.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from manymodels.config import ALL_NODES  # noqa: E402
from manymodels.core import reconcile as rc  # noqa: E402
from manymodels.store.datastore import Datastore  # noqa: E402

GROUPS = ["state", "region", "purpose"]
LEVELS = [[], ["state"], ["state", "region"], ["purpose"], ["state", "purpose"]]


def rms(x) -> float:
    return float(np.sqrt(np.nanmean(np.square(x))))


def bias_by_model(frame: pd.DataFrame, trained: pd.DataFrame) -> None:
    bottom = frame[frame["level"] == "bottom"].merge(trained[[*GROUPS, "model"]], on=GROUPS)
    bottom["error"] = bottom["Prediction_base"] - bottom["trips"]
    table = bottom.groupby("model").agg(series=("node", "nunique"), error=("error", "sum"), actual=("trips", "sum"))
    table[["error", "actual"]] /= frame["date"].nunique()
    table["bias %"] = 100 * table["error"] / table["actual"]
    print("bottom series' mean base error a quarter, by the model they chose:\n" + table.round(1).to_string() + "\n")


def level_sums(frame: pd.DataFrame) -> None:
    total = frame[frame["level"] == "total"].set_index("date")
    print("each level's sum of base forecasts minus the total's base forecast (and minus the actual total):")
    for level in frame["level"].unique():
        sums = frame[frame["level"] == level].groupby("date")["Prediction_base"].sum()
        print(f"  {level:<16} {np.round(sums - total['Prediction_base']).astype(int).tolist()}  {np.round(sums - total['trips']).astype(int).tolist()}")
    print()


def error_ratios(store: Datastore, frame: pd.DataFrame) -> None:
    groups = store.read_split_groups()
    values = groups["values"].map(json.loads)
    is_total = values.map(lambda v: all(str(x) == ALL_NODES for x in v))
    is_bottom = values.map(lambda v: all(str(x) != ALL_NODES for x in v))
    kept = {}
    for key in groups["key"][is_total | is_bottom]:
        meta = store.read_model_meta(key, store.model_versions(key)[-1])
        errors = (meta.get("tuning") or {}).get("backtest_errors") or {}
        kept[key] = pd.Series(errors.get("errors", []), index=errors.get("periods", []), dtype=float)
    total = kept[groups["key"][is_total].iloc[0]]
    summed = pd.concat([kept[k] for k in groups["key"][is_bottom]], axis=1).sum(axis=1, min_count=1)
    test = frame.assign(error=frame["trips"] - frame["Prediction_base"])
    test_total = test[test["level"] == "total"]["error"]
    test_summed = test[test["level"] == "bottom"].groupby("date")["error"].sum()
    print(f"RMS of errors, the total's and the bottom series' summed: backtest {rms(total):,.0f} and {rms(summed):,.0f} "
          f"(x{rms(summed) / rms(total):.2f}); test quarters {rms(test_total):,.0f} and {rms(test_summed):,.0f} (x{rms(test_summed) / rms(test_total):.2f})\n")


def ets_setup(store: Datastore, frame: pd.DataFrame) -> None:
    from statsforecast.models import AutoETS

    from manymodels.steps.reconcile import level_accuracy

    bottom = frame[frame["level"] == "bottom"].drop_duplicates("node")[GROUPS].reset_index(drop=True)
    h = rc.build_hierarchy(bottom, LEVELS, bottom=GROUPS)
    train = pd.read_csv(HERE / "out" / "hierarchy" / "tourism.csv")
    train = train[pd.to_datetime(train["date"]) < pd.Timestamp(frame["date"].min())]
    wide = train.pivot_table(index=GROUPS, columns="date", values="trips").reindex(pd.MultiIndex.from_frame(bottom))
    history = np.asarray(h.S @ wide.to_numpy())
    test = frame[frame["level"] == "bottom"].pivot_table(index=GROUPS, columns="date", values="trips").reindex(pd.MultiIndex.from_frame(bottom))
    actual = np.asarray(h.S @ test.to_numpy())
    steps = actual.shape[1]
    base, fitted = np.zeros_like(actual), np.full_like(history, np.nan)
    for i in range(h.n_nodes):
        result = AutoETS(season_length=4).forecast(y=history[i], h=steps, fitted=True)
        base[i], fitted[i] = result["mean"], result["fitted"]
    residuals = (history - fitted)[:, 4:]
    for name, y in (("base", base), ("bottom_up", rc.bottom_up(h, base)), ("mint_shrink, one-step in-sample residuals", rc.mint_shrink(h, base, residuals))):
        accuracy = level_accuracy(h, base, y, actual, history, 4)
        print(f"AutoETS {name:<42}" + "  ".join(f"{k} {v['reconciled']['mase']:.3f}" for k, v in accuracy.items()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", type=Path, default=HERE / "out" / "hierarchy" / "store_tourism")
    parser.add_argument("--ets", action="store_true", help="also the AutoETS-on-every-node setup (needs statsforecast)")
    args = parser.parse_args()
    store = Datastore(str(args.store))
    frame = pd.read_csv(store.output_path("hierarchy_forecast.csv"), keep_default_na=False, na_values=[""])
    trained = pd.read_csv(store.output_path("training_output.csv"), keep_default_na=False)
    bias_by_model(frame, trained)
    level_sums(frame)
    error_ratios(store, frame)
    if args.ets:
        ets_setup(store, frame)
    return 0


if __name__ == "__main__":
    sys.exit(main())
