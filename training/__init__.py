"""Residual-model training (LightGBM, tracked in MLflow) and accuracy reports."""
