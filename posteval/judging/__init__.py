"""Judging numbers: bootstrap CIs and paired tests (stats, paired), run-versus-run comparison and the
gate's verdicts (compare), lineage and baselines (baseline), training health (health), forgetting against
the base model (forgetting), and what the nightly run re-evaluates (nightly).

May import the foundations, posteval.inputs, posteval.evaluators (the corpus aggregators) and posteval.db
(judging reads stored per-example scores); never the pipeline, the face, the flows or Prefect.
"""
