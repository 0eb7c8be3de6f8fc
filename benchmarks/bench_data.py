"""The checkpoint and sets that the whole-command and compute benchmarks share, and the same suite written
for posteval and as lm-evaluation-harness task YAMLs.

Three sets over the tiny local GPT-2 (built once into the temp folder, no hub): 240 prompts generated
greedily (stop at a newline), 180 three-way multiple-choice items (the contract labels, each one token),
300 texts scored by rolling perplexity. Both tools get the same rows, prompts, choices and options.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

CHECKPOINT_CACHE = Path(tempfile.gettempdir()) / "posteval-bench-checkpoint"
EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "contracts"
N_GENERATE, N_CHOICE, N_TEXTS = 240, 180, 300
MAX_NEW_TOKENS = 16
PROMPT = "Clause: {text}\nType:"
LABELS = ["lease", "nda", "employment"]
TASKS = ["pe_generate", "pe_choice", "pe_perplexity"]

SUITE = f"""\
name: bench-whole
generation: {{max_new_tokens: {MAX_NEW_TOKENS}, stop: ["\\n"], batch_size: 16}}
training_health: {{}}  # the overfitting verdict from trainer_state.json alone: no model work
datasets:
  - {{name: generate, path: generate.jsonl, key: id, prompt: "Clause: {{text}}\\nType:", reference: label,
     labels: [lease, nda, employment], metrics: [exact_match]}}
  - {{name: choice, path: choice.jsonl, key: id, prompt: "Clause: {{text}}\\nType:", reference: label,
     labels: [lease, nda, employment], scoring: loglikelihood, metrics: [accuracy, accuracy_norm]}}
  - {{name: perplexity, path: perplexity.jsonl, key: id, kind: perplexity,
     metrics: [perplexity, bits_per_byte]}}
"""

# lm-evaluation-harness 0.4: local JSON files through `datasets`' json builder; the same prompt, the same
# stop and token budget, the same choices after the default " " delimiter, the same rolling text.
LM_EVAL_TASKS = {
    "pe_generate": """\
task: pe_generate
dataset_path: json
dataset_kwargs: {{data_files: {{test: "{root}/generate.jsonl"}}}}
test_split: test
output_type: generate_until
doc_to_text: "Clause: {{{{text}}}}\\nType:"
doc_to_target: " {{{{label}}}}"
generation_kwargs: {{until: ["\\n"], max_gen_toks: {max_new}, do_sample: false}}
metric_list:
  - {{metric: exact_match}}
""",
    "pe_choice": """\
task: pe_choice
dataset_path: json
dataset_kwargs: {{data_files: {{test: "{root}/choice.jsonl"}}}}
test_split: test
output_type: multiple_choice
doc_to_text: "Clause: {{{{text}}}}\\nType:"
doc_to_choice: {labels}
doc_to_target: gold
metric_list:
  - {{metric: acc}}
  - {{metric: acc_norm}}
""",
    "pe_perplexity": """\
task: pe_perplexity
dataset_path: json
dataset_kwargs: {{data_files: {{test: "{root}/perplexity.jsonl"}}}}
test_split: test
output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: "{{{{text}}}}"
metric_list:
  - {{metric: word_perplexity}}
  - {{metric: byte_perplexity}}
  - {{metric: bits_per_byte}}
""",
}


def load_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def checkpoint() -> Path:
    """The benchmark's fine-tuned checkpoint, built once (~10 s of CPU) and reused from the temp folder."""
    tuned = CHECKPOINT_CACHE / "ft-120-steps"  # after fewer steps the model answers every prompt with "\n"
    if not (tuned / "trainer_state.json").exists():  # written last: a complete checkpoint
        from posteval.toymodel import build_base_model, finetune

        finetune(build_base_model(CHECKPOINT_CACHE / "base"), tuned, max_steps=120)
    return tuned


def rows() -> dict[str, list[dict[str, Any]]]:
    """The three sets, by file name: held-out clauses cycled, every clause once, general texts cycled."""
    heldout = load_jsonl(EXAMPLES / "heldout.jsonl")
    clauses = [
        row for name in ("heldout", "validation", "train") for row in load_jsonl(EXAMPLES / f"{name}.jsonl")
    ]
    general = load_jsonl(EXAMPLES / "general.jsonl")
    return {
        "generate.jsonl": [
            {
                "id": f"g{i}",
                "text": heldout[i % len(heldout)]["text"],
                "label": heldout[i % len(heldout)]["label"],
            }
            for i in range(N_GENERATE)
        ],
        "choice.jsonl": [
            {"id": f"c{i}", "text": row["text"], "label": row["label"], "gold": LABELS.index(row["label"])}
            for i, row in enumerate(clauses[:N_CHOICE])
        ],
        "perplexity.jsonl": [
            {"id": f"p{i}", "text": general[i % len(general)]["text"] + f" (note {i})"}
            for i in range(N_TEXTS)
        ],
    }


def write_sets(root: Path) -> Path:
    """The data files, posteval's suite and lm-eval's task YAMLs (in ``root/lm_eval_tasks``); the suite."""
    root.mkdir(parents=True, exist_ok=True)
    for name, items in rows().items():
        (root / name).write_text("".join(json.dumps(row) + "\n" for row in items), encoding="utf-8")
    (root / "suite.yaml").write_text(SUITE, encoding="utf-8")
    tasks = root / "lm_eval_tasks"
    tasks.mkdir(exist_ok=True)
    for name, text in LM_EVAL_TASKS.items():
        body = text.format(root=root, max_new=MAX_NEW_TOKENS, labels=json.dumps(LABELS))
        (tasks / f"{name}.yaml").write_text(body, encoding="utf-8")
    return root / "suite.yaml"
