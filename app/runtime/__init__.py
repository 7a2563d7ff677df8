"""Runtimes: where a deployment's Airflow components run (Kubernetes, local processes, none)."""
