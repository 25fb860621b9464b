"""The PanDA view in Airflow's UI (Airflow >= 3.1 plugin hooks): a tab on the task instance and DAG
run pages showing each PanDA task's status, progress, jobs, errors, attempts and outputs.

``plugin`` is what Airflow imports in every process (cheap: no FastAPI, no network); ``app`` is
built in the api-server on the first request.
"""
