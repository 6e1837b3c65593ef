"""Benchmarks: `python -m bench NAME [--quick]` (or `make bench BENCH=NAME BENCH_ARGS=--quick`).

Each protocol is a module `bench/<name>.py` with `main(argv) -> dict`; results go to
docs/benchmarks/<name>.json and .md with the machine and commit noted. `all` runs BENCHES.
"""

BENCHES: tuple[str, ...] = ("cascaded_gan", "lm_token_poisoning", "concept_poisoning", "class", "random10", "calibrate_gates",
                              "neuron_perturbation", "fuzz_intake")
