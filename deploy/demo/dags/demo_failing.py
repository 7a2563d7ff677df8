"""`sextant demo`: trigger it by hand for a task that fails."""

from __future__ import annotations

import pendulum
from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG

with DAG(
    dag_id="demo_failing",
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    tags=["sextant-demo"],
):
    BashOperator(task_id="fails", bash_command="echo about to fail; exit 1", retries=0)
