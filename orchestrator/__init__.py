"""The S3 orchestrator: Ray Tune trials, the MLflow layout (mlflow_layout), the report (report)."""
