"""Group models as ONNX graphs, for scoring inside a database (the ``onnx`` extra).

Pure functions: a model's stored state in, an ``onnx.ModelProto`` out.

- **LightGBM**: the booster's trees become one ``ai.onnx.ml`` TreeEnsembleRegressor
  (opset 3, understood by onnxruntime >= 1.10 and the databases built on it)
  with double-precision thresholds and leaf values, so every split is decided
  exactly as LightGBM decides it on the same double feature row (its missing
  value rules included; categorical splits become chains of equality tests).
  The sum of the trees leaves the operator as float32 (the operator's output
  type), which is the only difference from LightGBM: about 1e-7 relative.
- **linear** (the ridge model on known-future columns): an exact double graph
  of its features (fill, logs, Fourier terms of the period, series intercepts).

Both graphs end the same way: ``raw`` is the model's output in the target-
transform space (what the lags of the next forecast step read), ``prediction``
is in the target's units (inverse transform, clipped at 0 for non-negative
targets), and one ``prediction_q<NN>`` output per stored residual quantile.
"""

from __future__ import annotations

import itertools
import json
import math
from typing import Any

import numpy as np

try:
    import onnx
    from onnx import TensorProto, helper, numpy_helper
except ImportError:  # the extra is optional; export.py turns this into a clear message
    onnx = None

OPSET = 17
ML_OPSET = 3
IR_VERSION = 8  # readable by onnxruntime >= 1.10
EXP_OBJECTIVES = ("poisson", "gamma", "tweedie")  # LightGBM predicts exp(score) for these
IDENTITY_OBJECTIVES = ("regression", "regression_l1", "huber", "fair", "quantile", "mape")


class Unsupported(ValueError):
    """This model has no faithful ONNX form."""


# -- LightGBM ----------------------------------------------------------------------

def lightgbm_graph(model_text: str, n_features: int, post: dict, metadata: dict[str, str], num_iteration: int | None = None):
    """``features`` (double, [N, n_features]) -> ``raw``, ``prediction``, quantiles."""
    g = _Graph()
    raw, n_trees = _lightgbm_score(g, model_text, n_features, "features", num_iteration)
    return g.finish([("features", n_features)], raw, post, metadata, f"LightGBM booster ({n_trees} trees) of one mm group")


def _lightgbm_score(g: _Graph, model_text: str, n_features: int, input_name: str, num_iteration: int | None) -> tuple[str, int]:
    """The booster's raw output (its objective's scale) from ``input_name``, as nodes of ``g``."""
    import lightgbm as lgb

    dump = lgb.Booster(model_str=model_text).dump_model(num_iteration=num_iteration or -1)
    if dump.get("num_tree_per_iteration", 1) != 1:
        raise Unsupported("a multi-output LightGBM model cannot be exported")
    if dump["max_feature_idx"] + 1 != n_features:
        raise Unsupported(f"the booster has {dump['max_feature_idx'] + 1} features, the model metadata lists {n_features}")
    objective = str(dump.get("objective", "regression")).split()[0]
    if objective not in EXP_OBJECTIVES + IDENTITY_OBJECTIVES:
        raise Unsupported(f"LightGBM objective {objective!r} is not a regression objective mm can export")
    nodes, leaves = _tree_tables(dump["tree_info"])
    score_f32 = g._name("score_f32")
    trees = helper.make_node(
        "TreeEnsembleRegressor",
        [input_name],
        [score_f32],
        domain="ai.onnx.ml",
        n_targets=1,
        aggregate_function="AVERAGE" if dump.get("average_output") else "SUM",
        post_transform="NONE",
        nodes_treeids=nodes["tree"],
        nodes_nodeids=nodes["id"],
        nodes_featureids=nodes["feature"],
        nodes_modes=nodes["mode"],
        nodes_truenodeids=nodes["true"],
        nodes_falsenodeids=nodes["false"],
        nodes_missing_value_tracks_true=nodes["missing_true"],
        target_treeids=leaves["tree"],
        target_nodeids=leaves["id"],
        target_ids=[0] * len(leaves["id"]),
    )
    trees.attribute.extend(
        [
            helper.make_attribute("nodes_values_as_tensor", numpy_helper.from_array(np.asarray(nodes["value"], dtype=np.float64), "nodes_values_as_tensor")),
            helper.make_attribute("target_weights_as_tensor", numpy_helper.from_array(np.asarray(leaves["weight"], dtype=np.float64), "target_weights_as_tensor")),
        ]
    )
    g.nodes.append(trees)
    score = g.op("Cast", [score_f32], to=TensorProto.DOUBLE)
    raw = g.op("Exp", [score]) if objective in EXP_OBJECTIVES else score
    return raw, len(dump["tree_info"])


def _tree_tables(trees: list[dict]) -> tuple[dict, dict]:
    """TreeEnsembleRegressor attribute lists from LightGBM's JSON dump."""
    nodes: dict[str, list] = {k: [] for k in ("tree", "id", "feature", "mode", "value", "true", "false", "missing_true")}
    leaves: dict[str, list] = {k: [] for k in ("tree", "id", "weight")}
    for tree_id, tree in enumerate(trees):
        for row in _tree_rows(tree["tree_structure"], tree_id, leaves):
            for key, value in zip(nodes, (tree_id, *row)):
                nodes[key].append(value)
    return nodes, leaves


def _tree_rows(root: dict, tree_id: int, leaves: dict) -> list[tuple]:
    """One tree's nodes as (id, feature, mode, value, true id, false id, NaN goes true), by id."""
    counter = itertools.count()
    rows: list[tuple] = []

    def add(node: dict) -> int:
        if "leaf_value" in node:
            nid = next(counter)
            rows.append((nid, 0, "LEAF", 0.0, 0, 0, 0))
            leaves["tree"].append(tree_id)
            leaves["id"].append(nid)
            leaves["weight"].append(float(node["leaf_value"]))
            return nid
        feature = int(node["split_feature"])
        if node["decision_type"] == "==":
            # LightGBM: the integer value in the set -> left; anything else, NaN and negatives -> right
            categories = [int(c) for c in str(node["threshold"]).split("||")]
            chain = [next(counter) for _ in categories]
            left, right = add(node["left_child"]), add(node["right_child"])
            for i, (nid, category) in enumerate(zip(chain, categories)):
                rows.append((nid, feature, "BRANCH_EQ", float(category), left, chain[i + 1] if i + 1 < len(chain) else right, 0))
            return chain[0]
        threshold = float(node["threshold"])
        missing = node.get("missing_type", "None")
        default_left = bool(node.get("default_left", True))
        if missing == "Zero":
            # zero (and NaN, which LightGBM reads as zero here) takes the default side
            zero_test, split = next(counter), next(counter)
            left, right = add(node["left_child"]), add(node["right_child"])
            rows.append((zero_test, feature, "BRANCH_EQ", 0.0, left if default_left else right, split, 0))
            rows.append((split, feature, "BRANCH_LEQ", threshold, left, right, int(default_left)))
            return zero_test
        nid = next(counter)
        left, right = add(node["left_child"]), add(node["right_child"])
        # missing NaN: NaN takes the default side; missing None: NaN is read as 0.0
        nan_left = default_left if missing == "NaN" else 0.0 <= threshold
        rows.append((nid, feature, "BRANCH_LEQ", threshold, left, right, int(nan_left)))
        return nid

    add(root)
    return sorted(rows)


# -- linear ----------------------------------------------------------------------------

def linear_graph(state: dict[str, Any], n_exog: int, post: dict, metadata: dict[str, str]):
    """``inputs`` (double, [N, n_exog + 2]: known-future columns, period, series code) -> outputs.

    The same arithmetic as ``models.predict_linear``, with the standardisation
    folded into the weights.
    """
    g = _Graph()
    raw = _linear_score(g, state, n_exog, "inputs")
    return g.finish([("inputs", n_exog + 2)], raw, post, metadata, "ridge model of one mm group on its known-future columns, season and series")


def ensemble_graph(model_text: str, n_features: int, lightgbm_post: dict, linear_state: dict, n_exog: int, linear_post: dict, post: dict, metadata: dict[str, str], num_iteration: int | None = None):
    """``features`` (LightGBM's row) and ``inputs`` (the linear model's row) -> outputs.

    The members' predictions are averaged in the group's transform space, as
    ``models.average`` does. ``raw`` is the LightGBM member's own raw output:
    that is what the lags of its next forecast step read.
    """
    g = _Graph()
    lgb_raw, n_trees = _lightgbm_score(g, model_text, n_features, "features", num_iteration)
    linear_raw = _linear_score(g, linear_state, n_exog, "inputs")
    members = [g.point(lgb_raw, lightgbm_post), g.point(linear_raw, linear_post)]
    total = g.op("Add", [g.forward(members[0], post["transform"]), g.forward(members[1], post["transform"])])
    mean = g.op("Mul", [total, g.const(np.array(0.5))])
    doc = f"ensemble of one mm group: LightGBM ({n_trees} trees) and a ridge model, averaged"
    return g.finish([("features", n_features), ("inputs", n_exog + 2)], mean, post, metadata, doc, lag_raw=lgb_raw)


def _linear_score(g: _Graph, state: dict[str, Any], n_exog: int, input_name: str) -> str:
    """The ridge model's raw output (transform space) from ``input_name``, as nodes of ``g``."""
    coef = np.asarray(state["coef"], dtype=np.float64)
    mean, scale = np.asarray(state["mean_x"], dtype=np.float64), np.asarray(state["scale_x"], dtype=np.float64)
    weight = coef / scale if len(coef) else coef
    bias = float(state["intercept"]) - (float(np.sum(weight * mean)) if len(coef) else 0.0)
    # columns of models.linear_features, in order: x_j [, log x_j] per column; sin/cos pairs; series one-hot
    position = 0
    w_x, w_log, log_cols = np.zeros(n_exog), [], []
    for j, use_log in enumerate(state["exog_log"]):
        w_x[j] = weight[position]
        position += 1
        if use_log:
            log_cols.append(j)
            w_log.append(weight[position])
            position += 1
    m, k = int(state["fourier_period"] or 0), int(state["fourier_terms"] or 0)
    w_sin, w_cos = [], []
    if m and k:
        for _ in range(k):
            w_sin.append(weight[position])
            w_cos.append(weight[position + 1])
            position += 2
    n_series = int(state["n_series"])
    w_series = weight[position : position + n_series] if n_series > 1 else np.empty(0)
    if position + len(w_series) != len(weight):
        raise Unsupported("the linear model's coefficients do not match its feature layout")

    terms = [g.op("Expand", [g.const(np.array([[bias]])), g.op("Concat", [g.op("Shape", [input_name], end=1), g.const(np.array([1], dtype=np.int64))], axis=0)])]
    if n_exog:
        exog = g.slice(input_name, 0, n_exog)
        filled = g.op("Where", [g.op("IsNaN", [exog]), g.const(np.asarray(state["exog_fill"], dtype=np.float64)[None, :]), exog])
        if state.get("exog_min") is not None:  # clamped to the training range, as mm's own linear model does
            low = g.const(np.asarray(state["exog_min"], dtype=np.float64)[None, :])
            high = g.const(np.asarray(state["exog_max"], dtype=np.float64)[None, :])
            filled = g.op("Min", [g.op("Max", [filled, low]), high])
        terms.append(g.op("MatMul", [filled, g.const(w_x[:, None])]))
        if log_cols:
            picked = g.op("Gather", [filled, g.const(np.asarray(log_cols, dtype=np.int64))], axis=1)
            logs = g.op("Log", [g.op("Max", [picked, g.const(np.array(1e-9))])])
            terms.append(g.op("MatMul", [logs, g.const(np.asarray(w_log)[:, None])]))
    if m and k:
        period = g.slice(input_name, n_exog, n_exog + 1)
        angle = g.op("Mul", [g.op("Mul", [period, g.const(np.array(2 * math.pi))]), g.const(np.arange(1, k + 1, dtype=np.float64)[None, :] / m)])
        terms.append(g.op("MatMul", [g.op("Sin", [angle]), g.const(np.asarray(w_sin)[:, None])]))
        terms.append(g.op("MatMul", [g.op("Cos", [angle]), g.const(np.asarray(w_cos)[:, None])]))
    if n_series > 1:
        code = g.slice(input_name, n_exog + 1, n_exog + 2)
        onehot = g.op("Cast", [g.op("Equal", [code, g.const(np.arange(n_series, dtype=np.float64)[None, :])])], to=TensorProto.DOUBLE)
        known = g.op("MatMul", [onehot, g.const(w_series[:, None])])
        # a series the model never saw gets the average series intercept
        terms.append(g.op("Where", [g.op("Less", [code, g.const(np.array(float(n_series)))]), known, g.const(np.array(float(w_series.mean())))]))
    raw = terms[0]
    for term in terms[1:]:
        raw = g.op("Add", [raw, term])
    return raw


# -- shared graph building -----------------------------------------------------------------

class _Graph:
    def __init__(self):
        self.nodes: list = []
        self.initializers: list = []
        self._names = itertools.count()

    def _name(self, kind: str) -> str:
        return f"{kind.lower()}_{next(self._names)}"

    def const(self, value: np.ndarray) -> str:
        name = self._name("c")
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, kind: str, inputs: list[str], output: str | None = None, **attrs) -> str:
        output = output or self._name(kind)
        self.nodes.append(helper.make_node(kind, inputs, [output], **attrs))
        return output

    def slice(self, source: str, start: int, end: int) -> str:
        return self.op("Slice", [source, self.const(np.array([start], dtype=np.int64)), self.const(np.array([end], dtype=np.int64)), self.const(np.array([1], dtype=np.int64))])

    def point(self, raw: str, post: dict) -> str:
        """The inverse transform of ``raw``, clipped at 0 for non-negative targets."""
        point = self.op("Sub", [self.op("Exp", [raw]), self.const(np.array(1.0))]) if post["transform"] == "log1p" else raw
        return self.op("Max", [point, self.const(np.array(0.0))]) if post["nonnegative"] else point

    def forward(self, point: str, transform: str) -> str:
        """``models.forward``: log1p(max(point, 0)) for log1p models."""
        if transform != "log1p":
            return point
        return self.op("Log", [self.op("Add", [self.op("Max", [point, self.const(np.array(0.0))]), self.const(np.array(1.0))])])

    def finish(self, inputs: list[tuple[str, int]], raw: str, post: dict, metadata: dict[str, str], doc: str, lag_raw: str | None = None):
        """Outputs from the raw score: ``raw``, ``prediction`` and the residual quantiles.

        ``prediction`` carries the calibration ``post["scale"]`` (the point
        forecast fitted to the selection metric); the quantiles do not.
        """
        self.op("Identity", [lag_raw or raw], "raw")
        transform, nonnegative = post["transform"], post["nonnegative"]
        point = self.point(raw, post)
        scale = float(post.get("scale", 1.0))
        self.op("Identity", [point if scale == 1.0 else self.op("Mul", [point, self.const(np.array(scale))])], "prediction")
        outputs = ["raw", "prediction"]
        for name, shift in post.get("quantiles", {}).items():
            # automl.apply_residual: shift the (uncalibrated) point in the transform space
            if transform == "log1p":
                band = self.op("Sub", [self.op("Exp", [self.op("Add", [self.forward(point, transform), self.const(np.array(float(shift)))])]), self.const(np.array(1.0))])
            else:
                band = self.op("Add", [point, self.const(np.array(float(shift)))])
            if nonnegative:
                band = self.op("Max", [band, self.const(np.array(0.0))])
            self.op("Identity", [band], name)
            outputs.append(name)
        graph = helper.make_graph(
            self.nodes,
            "mm_group_model",
            [helper.make_tensor_value_info(name, TensorProto.DOUBLE, [None, width]) for name, width in inputs],
            [helper.make_tensor_value_info(name, TensorProto.DOUBLE, [None, 1]) for name in outputs],
            initializer=self.initializers,
            doc_string=doc,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid("ai.onnx.ml", ML_OPSET)], producer_name="manymodels")
        model.ir_version = IR_VERSION
        model.doc_string = doc
        helper.set_model_props(model, {k: v if isinstance(v, str) else json.dumps(v, default=str) for k, v in metadata.items()})
        onnx.checker.check_model(model)
        return model
