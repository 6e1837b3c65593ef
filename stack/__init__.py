"""Team mode: PostgreSQL, the Prefect server with process workers and the MLflow server on this
machine (`make up` / `make down` / `make ps`). Above `flows` in the layers: it deploys them."""
