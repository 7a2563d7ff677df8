"""Task and component logs of deployments: Airflow's logging settings, reads and live tails."""
