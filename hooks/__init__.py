"""Airflow hooks of casaflow: product stores and delivery manifests (no CASA here)."""
