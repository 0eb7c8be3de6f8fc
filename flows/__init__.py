"""Prefect flows: post_training (event or CLI), and later nightly; deployments live in prefect.yaml."""
