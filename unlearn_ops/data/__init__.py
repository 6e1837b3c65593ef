"""Data sets, the sample store and the splits methods see."""

from unlearn_ops.data.sources import LOADERS, DataSourceError, RawDataset
from unlearn_ops.data.splits import Part, Splits
from unlearn_ops.data.store import SampleStore, StoreError, build_store

__all__ = ["LOADERS", "DataSourceError", "RawDataset", "Part", "Splits", "SampleStore", "StoreError", "build_store"]
