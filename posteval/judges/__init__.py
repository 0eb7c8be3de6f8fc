"""LLM judges: open-ended answers scored against a rubric (pointwise) or against another model's answer
to the same prompt (pairwise), by an OpenAI-compatible chat endpoint, Anthropic's Messages API or a local
transformers chat model, all behind :class:`posteval.judges.backends.Judge`.

May import the foundations, posteval.inputs (checkpoint info) and posteval.runners (the local judge's
transformers backend); never the database (the pipeline hands in a cache), the pipeline, the flows or Prefect.
"""
