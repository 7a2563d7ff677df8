"""Sextant: observability and alerting control for fleets of Apache Airflow deployments."""

__version__ = "0.1.0"
