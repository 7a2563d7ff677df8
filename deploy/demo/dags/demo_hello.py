"""`sextant demo`: a run every minute, so the dashboards and rules have something to show."""

from __future__ import annotations

import pendulum
from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG

with DAG(
    dag_id="demo_hello",
    schedule="* * * * *",
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    is_paused_upon_creation=False,
    tags=["sextant-demo"],
):
    BashOperator(task_id="hello", bash_command="echo hello from the Sextant demo")
