"""Kiln runs started by the orchestrators teams already use: Airflow, Prefect, Kubeflow.

Each integration is an optional extra (``kiln-notebooks[airflow]``, ``[prefect]``,
``[kubeflow]``) and a module of its own that imports its orchestrator when it is imported,
never before: ``import kiln`` and ``kiln run`` load none of them.

- :mod:`kiln.integrations.airflow`: ``KilnOperator`` (one notebook) and
  ``kiln_pipeline_dag`` (a ``kiln.yaml`` pipeline as an Airflow DAG);
- :mod:`kiln.integrations.prefect`: the ``run_notebook`` task and ``pipeline_flow``;
- :mod:`kiln.integrations.kubeflow`: a pipeline compiled to a KFP v2 spec
  (``kiln build PIPELINE --to kfp FILE --image IMAGE``).

Every run goes through :func:`kiln.run` or :func:`kiln.run_task` (the one run path): it is
validated, recorded and tagged with the orchestrator's ids like any run.
:mod:`kiln.integrations.common` holds what the integrations share.
"""
