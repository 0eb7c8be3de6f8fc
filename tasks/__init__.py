"""Prefect @task wrappers, one module per pipeline stage, thin over posteval/ and evaluators/."""
