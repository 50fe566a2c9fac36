"""DVC's run-cache promise, checked from the inside: on a reuse hit no kernel runs at all."""

from __future__ import annotations

import manymodels as mm

# Every function that reads rows into a model, fits or predicts: none may run when
# nothing changed. Patched where they are looked up (the serial engine runs the
# worker tasks in this process) and at their source.
KERNELS = [
    "manymodels.runner.tasks.fit_group",
    "manymodels.runner.tasks.checked_forecast",
    "manymodels.runner.tasks.load_fitted",
    "manymodels.core.kernels.forecast_fitted",
    "manymodels.core.kernels.check_forecast",
    "manymodels.core.kernels.fit_group",
    "manymodels.core.kernels.forecast_group",
    "manymodels.core.partitioning.scan",
    "manymodels.core.partitioning.plan",
    "manymodels.core.models.fit_lightgbm",
    "manymodels.core.models.fit_linear",
    "lightgbm.train",
]


def _refuse(*args, **kwargs):
    raise AssertionError("a kernel ran although every input was unchanged")


def test_a_reuse_hit_runs_no_kernel(oj_config, monkeypatch):
    _, config = oj_config
    first = mm.run(config)
    assert first.exit_code == 0 and first.train.trained == 6
    for target in KERNELS:
        monkeypatch.setattr(target, _refuse)
    again = mm.run(config)
    assert again.exit_code == 0
    assert again.split.reused and again.train.reused == 6 and again.train.trained == 0
    assert again.forecast.reused == 6 and again.forecast.forecast == 0


def test_the_spy_would_see_a_kernel_run(oj_config, monkeypatch):
    """The same patches on a run that must fit: it fails, so the test above can fail."""
    _, config = oj_config
    mm.split(config)
    monkeypatch.setattr("manymodels.runner.tasks.fit_group", _refuse)
    result = mm.train(config)
    assert result.failed == 6 and "a kernel ran" in result.failures[0]["error"]
