"""Benchmarks: `python -m bench NAME [--quick]` (or `make bench BENCH=NAME BENCH_ARGS=--quick`).

Each protocol is a module with `main(argv) -> dict`, `bench/<name>.py` unless BENCHES names
another (`class` is a Python keyword: its module is `bench/class_deletion.py`); results go to
docs/benchmarks/<name>.json and .md with the machine and commit noted. `all` runs BENCHES.
"""

# protocol name (the CLI's and the report's) → module under bench/
BENCHES: dict[str, str] = {"cascaded_gan": "cascaded_gan", "lm_token_poisoning": "lm_token_poisoning",
                           "concept_poisoning": "concept_poisoning", "class": "class_deletion",
                           "random10": "random10", "calibrate_gates": "calibrate_gates",
                           "neuron_perturbation": "neuron_perturbation",
                           "fuzz_intake": "fuzz_intake", "overhead": "overhead",
                           "gpu_check": "gpu_check", "sharded": "sharded"}
