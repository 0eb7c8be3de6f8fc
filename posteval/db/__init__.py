"""Storing and querying: the SQLAlchemy 2 typed models, engines and sessions (commit at the edge), Alembic
migrations (posteval/db/migrations, run by migrate.py), repository functions that flush and never commit,
retries of transient errors, and the read side: every database read, once (queries: the history as pandas
DataFrames; reads: the rows judging and views read inside their own session; lineage order).

May import the foundations and posteval.inputs' value types (CheckpointInfo); never judging, the pipeline,
the face, the flows or Prefect.
"""
