"""API judges against scripted servers on 127.0.0.1: what is sent, retries (429 with Retry-After, 500),
timeouts, the one repair request, stored parse failures and the cache; and the pairwise position swap."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from scipy.stats import binomtest

from posteval.errors import InputError, RunnerError
from posteval.evaluators import EvalInputs, resolve_metric
from posteval.judges.backends import Judge, Messages, make_judge
from posteval.judges.engine import Item, judge_pairwise, judge_pointwise
from posteval.judges.spec import JudgeSpec, Pairwise, Rubric
from tests.judge_server import JudgeServer, Reply

RUBRIC = Rubric(criteria=["helpfulness", "accuracy"], scale=[1, 2, 3, 4, 5])
ITEMS = [Item("a", "What is a lease?", "A rental contract."), Item("b", "What is an NDA?", "A secret pact.")]
KEY_ENV = "POSTEVAL_TEST_JUDGE_KEY"
KEY = "sk-test-judge-secret-0123456789"


def _good(helpfulness: int = 4, accuracy: int = 5) -> str:
    return json.dumps(
        {
            "helpfulness": {"score": helpfulness, "rationale": "clear"},
            "accuracy": {"score": accuracy, "rationale": "correct"},
        }
    )


class DictCache:
    """An in-memory AnswerCache."""

    def __init__(self) -> None:
        self.stored: dict[str, dict[str, Any]] = {}

    def get(self, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        return {k: self.stored[k] for k in keys if k in self.stored}

    def put(self, key: str, answer: Mapping[str, Any]) -> None:
        self.stored[key] = dict(answer)


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)


def _openai(server: JudgeServer, **settings: Any) -> Judge:
    spec = {
        "model": f"openai:judge-model@{server.base_url}",
        "api_key_env": KEY_ENV,
        "concurrency": 1,
        "rubric": RUBRIC,
    }
    return make_judge(JudgeSpec(**{**spec, **settings}))


def _anthropic(server: JudgeServer, **settings: Any) -> Judge:
    spec = {
        "model": f"anthropic:claude-test@{server.root}",
        "api_key_env": KEY_ENV,
        "concurrency": 1,
        "rubric": RUBRIC,
    }
    return make_judge(JudgeSpec(**{**spec, **settings}))


def test_openai_judge_sends_the_rubric_at_temperature_0_with_the_key_and_parses_scores() -> None:
    with JudgeServer([Reply(_good(4, 5)), Reply(_good(2, 3))]) as server:
        records = judge_pointwise(_openai(server), RUBRIC, ITEMS, DictCache())
    assert [r["scores"] for r in records] == [
        {"helpfulness": 4.0, "accuracy": 5.0},
        {"helpfulness": 2.0, "accuracy": 3.0},
    ]
    assert records[0]["rationales"] == {"helpfulness": "clear", "accuracy": "correct"}
    first = server.requests[0]
    assert first.path == "/v1/chat/completions"
    assert first.headers["authorization"] == f"Bearer {KEY}"
    assert first.body["model"] == "judge-model"
    assert first.body["temperature"] == 0
    assert "What is a lease?" in first.body["messages"][1]["content"]
    assert records[0]["judge"].startswith(f"openai:judge-model@{server.base_url}|temperature=0.0")
    assert KEY not in json.dumps(records)
    assert records[0]["rubric_hash"] == RUBRIC.digest()


def test_a_malformed_answer_gets_one_repair_request_naming_the_problem() -> None:
    with JudgeServer([Reply("Sure! The answer is great."), Reply(_good())]) as server:
        [record] = judge_pointwise(_openai(server), RUBRIC, ITEMS[:1], DictCache())
    assert record["scores"] == {"helpfulness": 4.0, "accuracy": 5.0}
    assert len(server.requests) == 2
    repair = server.requests[1].body["messages"]
    assert repair[-2] == {"role": "assistant", "content": "Sure! The answer is great."}
    assert repair[-1]["content"].startswith("That answer is not valid: not JSON")


def test_what_never_parses_is_stored_unparsed_with_its_raw_text_and_counted_never_scored() -> None:
    wrong_scale = json.dumps(
        {"helpfulness": {"score": 9, "rationale": "x"}, "accuracy": {"score": 1, "rationale": "y"}}
    )
    script = [Reply(_good(4, 4)), Reply("{not json"), Reply(wrong_scale)]
    cache = DictCache()
    with JudgeServer(script) as server:
        records = judge_pointwise(_openai(server), RUBRIC, ITEMS, cache)
    assert len(server.requests) == 3  # one answer, one malformed answer and its single repair
    failed = records[1]
    assert failed["scores"] is None
    assert failed["raw"] == f"{{not json\n\n[repair request answered]\n{wrong_scale}"
    assert failed["error"] == "at helpfulness/score: 9 is not one of [1, 2, 3, 4, 5]"
    assert (
        cache.stored[next(iter(k for k, v in cache.stored.items() if v["parsed"] is None))]["raw"]
        == failed["raw"]
    )
    inputs = EvalInputs(
        predictions=[i.answer for i in ITEMS], judgments={"pointwise": records}, n_bootstrap=50
    )
    score = resolve_metric("judge_score").compute(inputs)
    assert score.value == 4.0  # the parsed example only; the failure is not a 0
    assert score.per_example is not None and math.isnan(score.per_example[1])
    assert score.details["judged"] == 1
    assert score.details["provenance"]["examples"][1]["raw"] == failed["raw"]
    failures = resolve_metric("judge_parse_failure_rate").compute(inputs)
    assert (failures.value, failures.per_example) == (0.5, [0.0, 1.0])


def test_429_with_retry_after_is_retried_by_the_sdk() -> None:
    script = [Reply(status=429, headers={"Retry-After": "0"}), Reply(_good())]
    with JudgeServer(script) as server:
        [record] = judge_pointwise(_openai(server, max_retries=2), RUBRIC, ITEMS[:1], DictCache())
    assert record["scores"] == {"helpfulness": 4.0, "accuracy": 5.0}
    assert len(server.requests) == 2


def test_500_is_retried_max_retries_times_then_fails_naming_the_judge() -> None:
    with (
        JudgeServer([Reply(status=500, headers={"Retry-After": "0"})]) as server,
        pytest.raises(
            RunnerError, match=r"judge judge-model at http://127\.0\.0\.1:\d+/v1: InternalServerError"
        ),
    ):
        judge_pointwise(_openai(server, max_retries=2), RUBRIC, ITEMS[:1], DictCache())
    assert len(server.requests) == 3


def test_an_answer_slower_than_the_timeout_fails_after_its_retries() -> None:
    with JudgeServer([Reply(_good(), delay_s=3.0)]) as server, pytest.raises(RunnerError, match="APITimeout"):
        judge_pointwise(_openai(server, timeout=0.3, max_retries=1), RUBRIC, ITEMS[:1], DictCache())
    assert len(server.requests) == 2


def test_cached_answers_are_never_asked_again_and_a_changed_rubric_is() -> None:
    cache = DictCache()
    with JudgeServer([Reply(_good())]) as server:
        judge = _openai(server)
        judge_pointwise(judge, RUBRIC, ITEMS, cache)
        again = judge_pointwise(judge, RUBRIC, ITEMS, cache)
        assert len(server.requests) == 2
        assert [r["scores"] for r in again] == [{"helpfulness": 4.0, "accuracy": 5.0}] * 2
        judge_pointwise(judge, RUBRIC.model_copy(update={"instructions": "Be harsh."}), ITEMS, cache)
        assert len(server.requests) == 4
        judge_pointwise(_openai(server, max_tokens=64), RUBRIC, ITEMS, cache)  # other settings: other answers
        assert len(server.requests) == 6


def test_anthropic_judge_uses_the_messages_api_with_the_key_from_its_variable() -> None:
    script = [Reply(status=429, headers={"retry-after": "0"}), Reply("```json\n" + _good(3, 2) + "\n```")]
    with JudgeServer(script) as server:
        [record] = judge_pointwise(_anthropic(server, max_retries=1), RUBRIC, ITEMS[:1], DictCache())
    assert record["scores"] == {"helpfulness": 3.0, "accuracy": 2.0}
    assert [r.path for r in server.requests] == ["/v1/messages", "/v1/messages"]
    body = server.requests[1].body
    headers = server.requests[1].headers  # the SDK's choice: x-api-key, or a bearer token in recent ones
    assert KEY in (headers.get("x-api-key"), headers.get("authorization", "").removeprefix("Bearer "))
    assert body["temperature"] == 0 and body["model"] == "claude-test"
    assert body["system"].startswith("You are a strict")
    assert [m["role"] for m in body["messages"]] == ["user"]


def test_anthropic_malformed_then_500_stays_unparsed_or_fails() -> None:
    with JudgeServer([Reply("nope"), Reply("still nope")]) as server:
        [record] = judge_pointwise(_anthropic(server), RUBRIC, ITEMS[:1], DictCache())
    assert record["scores"] is None and record["raw"].startswith("nope")
    with JudgeServer([Reply(status=500)]) as server, pytest.raises(RunnerError, match="InternalServerError"):
        judge_pointwise(_anthropic(server, max_retries=0), RUBRIC, ITEMS[:1], DictCache())
    assert len(server.requests) == 1


def test_an_unset_key_variable_is_an_error_naming_it() -> None:
    with pytest.raises(InputError, match="environment variable POSTEVAL_UNSET_KEY"):
        make_judge(
            JudgeSpec(model="openai:m@http://127.0.0.1:9/v1", api_key_env="POSTEVAL_UNSET_KEY", rubric=RUBRIC)
        )


class FirstAlways(Judge):
    """A judge with total position bias: answer A always wins."""

    free_form = True
    concurrency = 2
    identity = "scripted:first"  # type: ignore[assignment]

    def ask(self, messages: Messages) -> str:
        return json.dumps({"winner": "A", "rationale": "the first one"})


def _pairs(n: int) -> list[Item]:
    return [Item(f"k{i}", f"prompt {i}", f"tuned {i}", other=f"base {i}") for i in range(n)]


def test_a_judge_that_always_prefers_the_first_answer_gives_win_rate_one_half_all_ties() -> None:
    records = judge_pairwise(FirstAlways(), Pairwise(), _pairs(6), DictCache())
    inputs = EvalInputs(predictions=["x"] * 6, judgments={"pairwise": records}, n_bootstrap=50)
    win = resolve_metric("win_rate").compute(inputs)
    assert win.value == 0.5
    assert (win.details["wins"], win.details["ties"], win.details["losses"]) == (0, 6, 0)
    assert win.details["sign_test_p"] == 1.0
    assert resolve_metric("tie_rate").compute(inputs).value == 1.0
    assert resolve_metric("loss_rate").compute(inputs).value == 0.0
    assert resolve_metric("judge_position_inconsistency").compute(inputs).value == 1.0


class PrefersTuned(Judge):
    """Picks the answer that starts with "tuned", except for prompts listed as losses."""

    free_form = True
    concurrency = 1
    identity = "scripted:tuned"  # type: ignore[assignment]

    def __init__(self, losses: set[str]) -> None:
        self.losses = losses
        self.asked: list[str] = []

    def ask(self, messages: Messages) -> str:
        text = messages[-1]["content"]
        self.asked.append(text)
        first_is_tuned = "[Answer A]\ntuned" in text
        prompt = text.split("[Prompt]\n")[1].split("\n")[0]
        tuned_wins = prompt not in self.losses
        return json.dumps({"winner": "A" if first_is_tuned == tuned_wins else "B", "rationale": "r"})


def test_both_orders_agree_win_rate_and_sign_test_match_scipy() -> None:
    judge = PrefersTuned(losses={"prompt 0", "prompt 1"})
    cache = DictCache()
    records = judge_pairwise(judge, Pairwise(), _pairs(10), cache)
    assert len(judge.asked) == 20  # each pair in both orders
    assert "[Answer A]\nbase 3" in judge.asked[-1] or any("[Answer A]\nbase" in t for t in judge.asked)
    inputs = EvalInputs(predictions=["x"] * 10, judgments={"pairwise": records}, n_bootstrap=200)
    win = resolve_metric("win_rate").compute(inputs)
    assert win.value == 0.8
    assert win.details["sign_test_p"] == binomtest(8, 10, 0.5).pvalue
    assert win.ci_low is not None and win.ci_high is not None and win.ci_low <= 0.8 <= win.ci_high
    assert resolve_metric("judge_position_inconsistency").compute(inputs).value == 0.0
    judge_pairwise(judge, Pairwise(), _pairs(10), cache)
    assert len(judge.asked) == 20  # cached


def test_what_a_pair_is_judged_against_is_in_its_cache_key_and_provenance_not_its_rubric_hash() -> None:
    judge, cache = PrefersTuned(losses=set()), DictCache()
    against_base = judge_pairwise(judge, Pairwise(), _pairs(3), cache)
    named = Pairwise(against="0123abcd")
    against_run = judge_pairwise(judge, named, _pairs(3), cache, "0123abcd" + "e" * 28)
    assert len(judge.asked) == 12  # the same pairs against another run are asked again, not read back
    assert [r["against"] for r in against_base] == ["base"] * 3
    assert [r["against"] for r in against_run] == ["0123abcd" + "e" * 28] * 3
    assert named.digest() == Pairwise().digest()  # the instructions' hash, whatever is compared with
    assert named.named_run == "0123abcd" and Pairwise().named_run is None
    inputs = EvalInputs(predictions=["x"] * 3, judgments={"pairwise": against_run}, n_bootstrap=50)
    assert (
        resolve_metric("win_rate").compute(inputs).details["provenance"]["against"] == "0123abcd" + "e" * 28
    )


class Concurrent(Judge):
    """Records how many requests are in flight; pairs of requests meet at a barrier, so two run at once."""

    free_form = True
    identity = "scripted:concurrent"  # type: ignore[assignment]

    def __init__(self, concurrency: int) -> None:
        import threading

        self.concurrency = concurrency
        self.lock = threading.Lock()
        self.barrier = threading.Barrier(2, timeout=10)
        self.in_flight = 0
        self.most = 0

    def ask(self, messages: Messages) -> str:
        with self.lock:
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
        self.barrier.wait()
        with self.lock:
            self.in_flight -= 1
        return _good()


def test_at_most_concurrency_requests_are_in_flight_per_judge() -> None:
    items = [Item(f"k{i}", f"prompt {i}", f"answer {i}") for i in range(8)]
    judge = Concurrent(concurrency=2)
    records = judge_pointwise(judge, RUBRIC, items, DictCache())
    assert judge.most == 2
    assert [r["key"] for r in records] == [i.key for i in items]
