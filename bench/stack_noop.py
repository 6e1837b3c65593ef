"""A flow that does nothing: `bench stack` queues many of it to measure what orchestration alone
costs (worker pick-up, a flow-run process, its states) without a batch's imports or work."""

from prefect import flow


@flow(name="stack-noop")
def noop() -> None:
    return None
