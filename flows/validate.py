"""Build stage `validate`: Great Expectations over the sample store; failing data stops the build."""

from __future__ import annotations

from prefect import flow

from flows.params import load_params, resolve
from tasks.validation import validate_store_task
from unlearn_ops.utils import atomic_write_json


@flow(name="build-validate", log_prints=True)
def validate() -> dict:
    params = load_params()
    v = params["validate"]
    report = validate_store_task(str(resolve(params["data"]["store_dir"])), v["min_class_share"], v["max_class_share"])
    atomic_write_json(resolve("metrics/validation.json"), report)
    print(f"validation passed: {sum(s['evaluated'] for s in report['suites'])} expectations on {report['rows']} rows")
    return report


if __name__ == "__main__":
    validate()
