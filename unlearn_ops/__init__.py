"""unlearn_ops: the core of unlearn-pipeline, plain PyTorch + numpy + scikit-learn.

Nothing in this package imports prefect, mlflow or dvc (a test enforces it): orchestration,
tracking and data versioning live in `tasks/` and `flows/`, which call into this package.
"""

__version__ = "0.1.0"
