"""Data validation with Great Expectations: the sample store and its active manifest.

The suite is built in code (an ephemeral GX context: nothing written to disk), run on a frame
with one row per sample plus derived columns (pixel range, NaN, manifest consistency), and a
second frame with class shares. A failure raises `DataValidationError` carrying GX's own
description of each failed expectation.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from prefect import task

from unlearn_ops.data.store import SampleStore

log = logging.getLogger(__name__)


class DataValidationError(RuntimeError):
    def __init__(self, report: dict[str, Any]):
        self.report = report
        lines = [f"- {f['expectation']}({f['kwargs']}): {f['observed']}" for f in report["failures"]]
        super().__init__("data validation failed (Great Expectations):\n" + "\n".join(lines))


@dataclass(frozen=True)
class StoreExpectations:
    min_class_share: float = 0.05
    max_class_share: float = 0.20


def _context():
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    # GX sets its own logger level on import; its INFO lines ("Created temporary directory ...") are noise
    for name in ("great_expectations", "great_expectations.data_context.types.base"):
        logging.getLogger(name).setLevel(logging.WARNING)
    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    return ctx


def run_suite(name: str, df: pd.DataFrame, expectations: list, complete: bool = False) -> dict[str, Any]:
    """Validate `df` against `expectations` with GX; return a JSON-able report."""
    import great_expectations as gx

    ctx = _context()
    batch = ctx.data_sources.add_pandas(f"{name}_src").add_dataframe_asset(name).add_batch_definition_whole_dataframe("all")
    suite = ctx.suites.add(gx.ExpectationSuite(name=f"{name}_suite"))
    for e in expectations:
        suite.add_expectation(e)
    vd = ctx.validation_definitions.add(gx.ValidationDefinition(name=f"{name}_vd", data=batch, suite=suite))
    # COMPLETE lists every failing row's index (needed to reject single requests); SUMMARY is cheaper
    res = vd.run(batch_parameters={"dataframe": df},
                 result_format={"result_format": "COMPLETE" if complete else "SUMMARY"})
    failures = []
    for r in res.results:
        if not r.success:
            cfg = r.expectation_config
            result = r.result or {}
            observed = {k: result[k] for k in ("observed_value", "unexpected_count", "partial_unexpected_list")
                        if k in result}
            failures.append({"expectation": cfg.type,
                             "kwargs": {k: v for k, v in cfg.kwargs.items() if k not in ("batch_id", "result_format")},
                             "observed": json.loads(json.dumps(observed, default=str)),
                             # row positions, only with complete=True
                             "unexpected_index_list": list(result.get("unexpected_index_list") or [])})
    return {"suite": name, "success": bool(res.success), "evaluated": len(res.results), "failures": failures}


def store_frames(store: SampleStore) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-sample frame (with payload statistics) and per-class share frame."""
    df = store.index.reset_index(drop=True).copy()
    payload = store.payload()
    if payload.dtype.kind == "U":
        df["value_min"], df["value_max"] = 0.0, 1.0
        df["length"] = np.char.str_len(payload)
    else:
        flat = payload.reshape(len(payload), -1)
        scaled = flat.astype(np.float32) / (255.0 if payload.dtype == np.uint8 else 1.0)
        df["value_min"], df["value_max"] = scaled.min(1), scaled.max(1)
        df.loc[np.isnan(scaled).any(1), ["value_min", "value_max"]] = np.nan
    active = set(store.active_ids())
    in_active = df.sample_id.isin(active)
    df["manifest_ok"] = ~in_active | ((df.pool == "train") & ~df.purged)
    df["manifest_missing"] = False
    missing = active - set(df.sample_id)
    if missing:  # IDs in the manifest that the store does not have at all
        extra = pd.DataFrame({"sample_id": sorted(missing), "manifest_ok": False})
        df = pd.concat([df, extra], ignore_index=True)
    # A class whose every train sample was purged was forgotten on purpose (a class deletion):
    # it leaves the balance check. A class that is merely missing still fails it.
    all_train = store.index[store.index.pool == "train"]
    forgotten = {int(c) for c, g in all_train.groupby("label") if g.purged.all()}
    kept = [c for c in range(len(store.classes)) if c not in forgotten]
    train = all_train[~all_train.purged]
    shares = train.label.value_counts(normalize=True).reindex(kept, fill_value=0.0)
    return df, pd.DataFrame({"label": shares.index, "share": shares.to_numpy()})


def validate_store(store: SampleStore, cfg: StoreExpectations = StoreExpectations()) -> dict[str, Any]:
    import great_expectations.expectations as gxe

    df, classes = store_frames(store)
    total = sum(store.meta["counts"].values())
    n_classes = len(store.classes)
    samples = run_suite("samples", df, [
        gxe.ExpectTableRowCountToEqual(value=total),
        gxe.ExpectColumnValuesToBeUnique(column="sample_id"),
        gxe.ExpectColumnValuesToNotBeNull(column="label"),
        gxe.ExpectColumnValuesToBeBetween(column="label", min_value=0, max_value=n_classes - 1),
        gxe.ExpectColumnValuesToBeInSet(column="pool", value_set=["train", "nonmember", "test"]),
        gxe.ExpectColumnValuesToNotBeNull(column="value_min"),
        gxe.ExpectColumnValuesToNotBeNull(column="value_max"),
        gxe.ExpectColumnValuesToBeBetween(column="value_min", min_value=0.0, max_value=1.0),
        gxe.ExpectColumnValuesToBeBetween(column="value_max", min_value=0.0, max_value=1.0),
        gxe.ExpectColumnValueLengthsToEqual(column="sha256", value=64),
        gxe.ExpectColumnValuesToBeInSet(column="manifest_ok", value_set=[True]),
    ])
    balance = run_suite("class_balance", classes, [
        gxe.ExpectColumnValuesToBeBetween(column="share", min_value=cfg.min_class_share, max_value=cfg.max_class_share),
    ])
    report = {"dataset": store.name, "success": samples["success"] and balance["success"],
              "suites": [samples, balance], "failures": samples["failures"] + balance["failures"],
              "rows": int(len(df))}
    return report


@task(name="validate-store")
def validate_store_task(store_dir: str, min_class_share: float, max_class_share: float) -> dict[str, Any]:
    report = validate_store(SampleStore(store_dir), StoreExpectations(min_class_share, max_class_share))
    if not report["success"]:
        raise DataValidationError(report)
    return report
