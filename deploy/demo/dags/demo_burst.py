"""`sextant demo`: trigger it by hand to queue a burst of tasks (the workers' queue grows)."""

from __future__ import annotations

import pendulum
from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG

with DAG(
    dag_id="demo_burst",
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    tags=["sextant-demo"],
):
    for i in range(12):
        BashOperator(task_id=f"work_{i}", bash_command="sleep 30")
