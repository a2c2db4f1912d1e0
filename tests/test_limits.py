import json

import pytest

from recursa import ConfigError, Limits, ModelPrice, PriceTable, Usage
from recursa.limits import Budget, BudgetExhausted, approx_tokens
from recursa.types import StopReason


def test_limits_are_validated():
    with pytest.raises(ConfigError, match="max_iterations"):
        Limits(max_iterations=0)
    with pytest.raises(ConfigError, match="max_cost_usd"):
        Limits(max_cost_usd=-1)
    with pytest.raises(ConfigError, match="max_depth"):
        Limits(max_depth=-1)
    assert Limits(max_depth=0).max_depth == 0


def test_reserve_refuses_past_max_llm_calls():
    b = Budget(Limits(max_llm_calls=2))
    b.reserve_call()
    b.reserve_call()
    with pytest.raises(BudgetExhausted) as e:
        b.reserve_call()
    assert e.value.reason is StopReason.MAX_LLM_CALLS
    # The stop is sticky: every later check says the same.
    with pytest.raises(BudgetExhausted):
        b.check()


def test_reserve_refuses_a_prompt_that_would_pass_max_tokens():
    b = Budget(Limits(max_tokens=1000))
    b.reserve_call(prompt_chars=400)  # ~100 tokens: fine
    with pytest.raises(BudgetExhausted) as e:
        b.reserve_call(prompt_chars=8000)  # ~2000 tokens
    assert e.value.reason is StopReason.MAX_TOKENS


def test_charge_prices_and_accumulates_by_model_and_depth():
    b = Budget(Limits(max_cost_usd=0.5))
    u = Usage(input_tokens=1_000_000, output_tokens=100_000, cached_tokens=400_000, calls=1)
    priced = b.ledger.charge("openai:gpt-5-mini", 0, u)
    # 600k fresh * 0.25 + 400k cached * 0.025 + 100k out * 2.00, per million
    assert priced.cost_usd == pytest.approx(0.15 + 0.01 + 0.2)
    b.ledger.charge("openai:gpt-5-mini", 1, u)
    assert b.ledger.by_depth[0].calls == 1
    assert b.ledger.by_depth[1].calls == 1
    assert b.ledger.by_model["openai:gpt-5-mini"].calls == 2
    with pytest.raises(BudgetExhausted) as e:
        b.check()
    assert e.value.reason is StopReason.MAX_COST


def test_unknown_prices_are_counted_not_treated_as_free():
    b = Budget(Limits())
    b.ledger.charge("openai:some-unknown-model", 0, Usage(input_tokens=10, calls=1))
    b.ledger.charge("local:qwen", 0, Usage(input_tokens=10, calls=1))
    assert b.usage.unpriced_calls == 1
    assert b.usage.calls == 2


def test_price_lookup_prefix_and_overrides(tmp_path):
    table = PriceTable()
    assert table.lookup("gpt-5-mini-2025-08-07") == table.lookup("openai:gpt-5-mini")
    assert table.lookup("openai:gpt-5-nano").input == 0.05  # longest prefix, not gpt-5
    assert table.lookup("scripted") == ModelPrice(0.0, 0.0, 0.0)
    f = tmp_path / "prices.json"
    f.write_text(json.dumps({"my-model": {"input": 1.0, "output": 2.0}}))
    extended = PriceTable.from_file(f)
    assert extended.cost("openai:my-model", Usage(input_tokens=1_000_000, calls=1)) == 1.0
    toml = tmp_path / "prices.toml"
    toml.write_text("[other]\ninput = 3\noutput = 4\ncached_input = 0.5\n")
    assert PriceTable.from_file(toml).lookup("other").cached_input == 0.5


def test_bad_price_files_say_what_is_wrong(tmp_path):
    f = tmp_path / "p.json"
    f.write_text('{"m": {"input": 1}}')
    with pytest.raises(ConfigError, match="needs 'input' and 'output'"):
        PriceTable.from_file(f)
    f.write_text("not json")
    with pytest.raises(ConfigError, match="not valid"):
        PriceTable.from_file(f)
    with pytest.raises(ConfigError, match="cannot read"):
        PriceTable.from_file(tmp_path / "nope.json")


def test_approx_tokens_rounds_up():
    assert approx_tokens(0) == 0
    assert approx_tokens(1) == 1
    assert approx_tokens(8) == 2
