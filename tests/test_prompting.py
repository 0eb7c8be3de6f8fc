"""Chat templates and few-shot prompts: the suite settings, their resolution from the checkpoint, the
rendered text (against apply_chat_template called directly), tokens without a second BOS, and identity."""

from __future__ import annotations

import random
import re
import shutil
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from posteval.errors import DatasetError, InputError, SuiteError
from posteval.inputs.checkpoint import resolve_checkpoint, resolve_served
from posteval.inputs.data import load_dataset
from posteval.inputs.prompting import draw_shots
from posteval.inputs.suite import load_suite
from posteval.pipeline import config_hash, output_settings
from posteval.pipeline.resolve import resolve
from posteval.runners.base import templated_prompts
from posteval.runners.chat import model_inputs, prompting, resolve_chat
from posteval.runners.hf import HFRunner
from posteval.toymodel import CHAT_TEMPLATE
from tests.helpers import heldout_rows, write_jsonl

SUITE = """\
name: chat
allow_incomplete: true
{top}
datasets:
  - name: clauses
    path: items.jsonl
    prompt: "Clause: {{text}}\\nType:"
    reference: label
    key: id
    {dataset}
    metrics: [exact_match]
  - name: general
    path: items.jsonl
    kind: perplexity
    metrics: [perplexity]
"""


def _with_template(base: Path, folder: Path, template: str | None) -> Path:
    """A copy of ``base`` whose tokenizer config carries ``template`` (None: no chat template)."""
    shutil.copytree(base, folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    (folder / "chat_template.jinja").unlink(missing_ok=True)
    if template is not None:
        tokenizer.chat_template = template
        tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def chat_model(base_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _with_template(base_checkpoint, tmp_path_factory.mktemp("chat") / "model", CHAT_TEMPLATE)


def _suite(tmp_path: Path, top: str = "", dataset: str = "") -> Path:
    write_jsonl(tmp_path / "items.jsonl", heldout_rows(6))
    write_jsonl(tmp_path / "shots.jsonl", heldout_rows(20)[10:])
    path = tmp_path / "suite.yaml"
    path.write_text(SUITE.format(top=top, dataset=dataset))
    return path


def test_chat_auto_is_on_with_a_template_and_off_without(
    chat_model: Path, base_checkpoint: Path, tmp_path: Path
) -> None:
    suite = load_suite(_suite(tmp_path)).suite
    with_template = resolve_chat(suite, resolve_checkpoint(chat_model))
    without = resolve_chat(suite, resolve_checkpoint(base_checkpoint))
    assert [d.chat for d in with_template.datasets] == [True, False]  # perplexity never uses a template
    assert [d.chat for d in without.datasets] == [False, False]


def test_chat_true_without_a_template_is_refused_naming_the_dataset(
    base_checkpoint: Path, tmp_path: Path
) -> None:
    suite = load_suite(_suite(tmp_path, top="chat: true")).suite
    with pytest.raises(
        InputError, match=r"dataset 'clauses': chat: true, but the tokenizer at .* has no chat"
    ):
        resolve_chat(suite, resolve_checkpoint(base_checkpoint))


def test_rendered_prompts_equal_apply_chat_template_with_system_and_fewshot_turns(
    chat_model: Path, tmp_path: Path
) -> None:
    suite_path = _suite(
        tmp_path, top='system: "Be brief."', dataset="fewshot: {n: 2, from: shots.jsonl, seed: 1}"
    )
    resolved = resolve(str(chat_model), str(suite_path))
    spec = resolved.suite.suite.datasets[0]
    prompts, how = model_inputs(resolved.suite.suite, load_dataset(spec))
    tokenizer = AutoTokenizer.from_pretrained(chat_model)
    shots = [heldout_rows(20)[10:][i] for i in sorted(random.Random(1).sample(range(10), 2))]
    turns = []
    for shot in shots:
        turns += [
            {"role": "user", "content": f"Clause: {shot['text']}\nType:"},
            {"role": "assistant", "content": shot["label"]},
        ]
    expected = [
        tokenizer.apply_chat_template(
            [
                {"role": "system", "content": "Be brief."},
                *turns,
                {"role": "user", "content": f"Clause: {row['text']}\nType:"},
            ],
            tokenize=False,
            add_generation_prompt=True,
        )
        for row in heldout_rows(6)
    ]
    assert prompts == expected
    assert how.shots.keys == tuple(shot["id"] for shot in shots)


def test_a_template_that_writes_bos_gets_no_second_one_even_with_bos_always(chat_model: Path) -> None:
    runner = HFRunner(resolve_checkpoint(chat_model), device="cpu", bos="always")
    tokenizer = runner.tokenizer
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Clause: x\nType:"}], tokenize=False, add_generation_prompt=True
    )
    plain = tokenizer(rendered, add_special_tokens=False)["input_ids"]
    assert plain[0] == tokenizer.bos_token_id and plain[1] != tokenizer.bos_token_id
    assert runner._with_prefix(rendered, 1000)[0] == [tokenizer.bos_token_id, *plain]  # untemplated: prefixed
    with templated_prompts():
        assert runner._with_prefix(rendered, 1000)[0] == plain
        assert runner._pair_item(0, rendered, "lease").ids[: len(plain)] == plain


def test_a_changed_template_system_or_draw_changes_the_config_hash(chat_model: Path, tmp_path: Path) -> None:
    other = _with_template(chat_model, tmp_path / "other", CHAT_TEMPLATE.replace("<|end|>", "<|eot|>"))

    def chash(checkpoint: Path, top: str = "", dataset: str = "") -> str:
        folder = tmp_path / f"s{len(list(tmp_path.iterdir()))}"
        folder.mkdir()
        resolved = resolve(str(checkpoint), str(_suite(folder, top=top, dataset=dataset)))
        return config_hash(resolved.suite.suite, resolved.datasets[0].spec, resolved.checkpoint)

    first = chash(chat_model)
    assert chash(chat_model) == first
    assert chash(other) != first
    assert chash(chat_model, top='system: "Be brief."') != first
    shots = "fewshot: {n: 1, from: shots.jsonl, seed: 0}"
    assert chash(chat_model, dataset=shots) != first
    assert chash(chat_model, dataset=shots.replace("seed: 0", "seed: 5")) != chash(chat_model, dataset=shots)


def test_plain_prompts_keep_their_config_hash_and_fewshot_is_text_without_a_template(
    base_checkpoint: Path, tmp_path: Path
) -> None:
    resolved = resolve(
        str(base_checkpoint), str(_suite(tmp_path, dataset="fewshot: {n: 1, from: shots.jsonl}"))
    )
    spec = resolved.datasets[0].spec
    how = prompting(resolved.suite.suite, spec)
    assert (how.chat, how.describe()["template_sha256"]) == (False, None)  # type: ignore[index]
    prompts, _ = model_inputs(resolved.suite.suite, load_dataset(spec))
    shot, answer = how.shots.pairs[0]
    assert prompts[0] == f"{shot} {answer}\n\nClause: {heldout_rows(1)[0]['text']}\nType:"
    plain = spec.model_copy(update={"fewshot": None})
    assert prompting(resolved.suite.suite, plain).describe() is None  # no "prompting" output setting


def test_fewshot_from_the_evaluated_split_or_too_many_is_refused(tmp_path: Path) -> None:
    suite = load_suite(_suite(tmp_path, dataset="fewshot: {n: 11, from: shots.jsonl}")).suite
    with pytest.raises(DatasetError, match=r"fewshot asks for 11 examples but .*shots.jsonl has 10"):
        draw_shots(suite.datasets[0])
    same = suite.datasets[0].model_copy(
        update={"split": "test", "fewshot": suite.datasets[0].fewshot.model_copy(update={"source": "test"})}  # type: ignore[union-attr]
    )
    with pytest.raises(DatasetError, match="draws from split 'test', the evaluated split itself"):
        draw_shots(same)


@pytest.mark.parametrize(
    ("dataset", "message"),
    [
        ("config: main", "'config' and 'revision' apply to hub datasets only"),
        ("chat: sometimes", "datasets[0].chat"),
        ("fewshot: {n: 0, from: shots.jsonl}", "datasets[0].fewshot.n"),
        (
            "fewshot: {n: 1, from: shots.jsonl, sed: 1}",
            "datasets[0].fewshot.sed: unknown field 'sed' (expected one of: n, from, seed)",
        ),
    ],
)
def test_bad_chat_and_hub_settings_are_refused_at_suite_load(
    tmp_path: Path, dataset: str, message: str
) -> None:
    with pytest.raises(SuiteError, match=re.escape(message)):
        load_suite(_suite(tmp_path, dataset=dataset))


def test_chat_loglikelihood_on_a_served_model_needs_a_tokenizer_folder(
    tmp_path: Path, chat_model: Path
) -> None:
    served = resolve_served("openai:toy@http://127.0.0.1:9/v1")
    choice = "labels: [lease, nda, employment]\n    scoring: loglikelihood"
    suite = load_suite(_suite(tmp_path, top="chat: true", dataset=choice)).suite
    with pytest.raises(InputError, match="needs a 'tokenizer:' folder in the suite"):
        resolve_chat(suite, served)
    generated = load_suite(_suite(tmp_path, top="chat: true")).suite
    assert prompting(
        resolve_chat(generated, served), generated.datasets[0].model_copy(update={"chat": True})
    ).server_side
    with_tokenizer = suite.model_copy(update={"tokenizer": chat_model})
    resolved = resolve_chat(with_tokenizer, served)
    how = prompting(resolved, resolved.datasets[0])
    assert how.chat and not how.server_side and how.template == CHAT_TEMPLATE


def test_the_chat_setting_of_the_evaluated_checkpoint_applies_to_its_base_model(
    chat_model: Path, base_checkpoint: Path, tmp_path: Path
) -> None:
    suite_path = _suite(tmp_path, top=f"base_model: {base_checkpoint}")
    resolved = resolve(str(chat_model), str(suite_path))
    assert resolved.base is not None
    suite, spec = resolved.suite.suite, resolved.datasets[0].spec
    ours = output_settings(suite, spec, resolved.checkpoint)["prompting"]
    theirs = output_settings(suite, spec, resolved.base)["prompting"]
    assert ours == theirs and ours["chat"] is True  # type: ignore[index]
    prompts, _ = model_inputs(suite, load_dataset(spec))
    assert prompts[0].startswith("<|endoftext|><|user|>\nClause: ")  # the base has no template of its own


def test_an_edited_fewshot_source_is_drawn_from_again_in_the_same_process(tmp_path: Path) -> None:
    """The draw is cached per process and remembered across processes by the source's stat keys: a source
    rewritten in place (a long-lived `posteval serve`, a notebook) gives the new rows' shots."""
    suite = load_suite(_suite(tmp_path, dataset="fewshot: {n: 2, from: shots.jsonl, seed: 3}")).suite
    spec = suite.datasets[0]
    before = prompting(suite, spec).shots
    assert before == draw_shots(spec)
    rows = heldout_rows(20)[10:]
    write_jsonl(tmp_path / "shots.jsonl", [{**row, "text": row["text"].upper()} for row in rows])
    after = prompting(suite, spec).shots
    assert after == draw_shots(spec)
    assert after.pairs != before.pairs and after.keys == before.keys  # same rows drawn, new text
