"""Great Expectations accepts a good store and rejects corrupted ones with GX's description."""

import numpy as np
import pandas as pd
import pytest

from tasks.validation import DataValidationError, StoreExpectations, validate_store, validate_store_task
from unlearn_ops.data.sources import load_digits
from unlearn_ops.data.store import SampleStore, build_store

LOOSE = StoreExpectations(0.05, 0.2)


@pytest.fixture()
def store(tmp_path):
    return build_store(load_digits(), tmp_path / "digits", max_subject_size=10)


def test_good_store_passes(store):
    report = validate_store(store, LOOSE)
    assert report["success"], report["failures"]
    assert report["rows"] == 1797


def test_out_of_range_label_fails_with_gx_report(store):
    df = store.index.reset_index(drop=True)
    df.loc[0, "label"] = 42
    (store.root / "index.csv").write_text(df.to_csv(index=False))
    with pytest.raises(DataValidationError, match="expect_column_values_to_be_between.*label"):
        validate_store_task.fn(str(store.root), 0.05, 0.2)


def test_duplicate_ids_and_bad_manifest_fail(store):
    df = store.index.reset_index(drop=True)
    df.loc[1, "sample_id"] = df.loc[0, "sample_id"]
    (store.root / "index.csv").write_text(df.to_csv(index=False))
    store.write_manifest(store.active_ids() + ["digits/test/999999"])
    report = validate_store(SampleStore(store.root), LOOSE)
    failed = {f["expectation"] for f in report["failures"]}
    assert "expect_column_values_to_be_unique" in failed
    assert "expect_column_values_to_be_in_set" in failed


def test_nan_pixels_and_class_imbalance_fail(store):
    payload = store.payload().astype(np.float32)
    payload[5, 0, 0, 0] = np.nan
    store.rewrite_payload(payload)
    report = validate_store(SampleStore(store.root), StoreExpectations(0.099, 0.101))
    failed = {(f["expectation"], f["kwargs"].get("column")) for f in report["failures"]}
    assert ("expect_column_values_to_not_be_null", "value_min") in failed
    assert ("expect_column_values_to_be_between", "share") in failed


def test_a_wholly_forgotten_class_is_not_an_imbalance(store):
    store.purge(store.class_ids(3))
    store.write_manifest([i for i in store.active_ids() if i not in set(store.class_ids(3))])
    report = validate_store(SampleStore(store.root), LOOSE)
    assert report["success"], report["failures"]
    assert isinstance(pd.DataFrame(), pd.DataFrame)
