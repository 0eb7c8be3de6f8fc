"""What a run is made of: the suite file, the held-out datasets and the checkpoint, each validated (every
error names the file, line or field and what was expected) and fingerprinted by content, plus the
preflight that proves a checkpoint can be loaded and resolve(), the one place all of them are resolved for
the CLI and the flow alike.

May import the foundations (settings, errors, results, hashing, progress), the metric registry
(posteval.evaluators: a suite names metrics) and the option types of posteval.judging's health and
forgetting checks; never the database, the pipeline, the face, the flows or Prefect.
"""
