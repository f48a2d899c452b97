"""Deploy step: MLflow registry alias and the serving bundle export."""
