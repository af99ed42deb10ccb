from __future__ import annotations

import pytest

from learnloop.errors import ConfigError, InvalidInputError
from learnloop.jobs.budget import (
    Budget,
    BudgetPolicy,
    Price,
    PriceTable,
    Spend,
    exceeded,
    month_key,
    preflight,
)


def test_cost_is_tokens_times_price_per_million() -> None:
    table = PriceTable({"m": Price(input_per_mtok=2.5, output_per_mtok=10.0)})
    # 1,200 in * 2.5 / 1e6 + 300 out * 10 / 1e6 = 0.003 + 0.003
    assert table.cost("m", tokens_in=1200, tokens_out=300) == pytest.approx(0.006)
    assert table.cost("local", tokens_in=10**9, tokens_out=10**9) == 0.0


def test_unknown_model_and_negative_tokens_are_refused() -> None:
    with pytest.raises(InvalidInputError, match="no price for model 'gpt-9'"):
        PriceTable().cost("gpt-9", tokens_in=1, tokens_out=1)
    with pytest.raises(InvalidInputError, match="tokens_in=-1"):
        PriceTable().cost("local", tokens_in=-1, tokens_out=0)


def test_budget_limits_are_checked() -> None:
    with pytest.raises(ConfigError, match="max_wall_s"):
        Budget(max_wall_s=-1)
    with pytest.raises(ConfigError, match="input_per_mtok"):
        Price(input_per_mtok=float("nan"), output_per_mtok=0)


def test_exceeded_names_the_first_broken_limit() -> None:
    budget = Budget(max_cost_usd=1.0, max_wall_s=10.0, max_rollouts=5)
    assert exceeded(Spend(cost_usd=1.0, wall_s=10.0, rollouts=5), budget) is None  # at the limit
    assert "rollouts" in exceeded(Spend(rollouts=6), budget)  # type: ignore[operator]
    assert "wall time" in exceeded(Spend(wall_s=10.5), budget)  # type: ignore[operator]
    assert exceeded(Spend(cost_usd=2.0), budget) == (
        "cost $2.0000 exceeds the job budget of $1.0000"
    )
    assert exceeded(Spend(cost_usd=1e9, rollouts=10**9), Budget()) is None


def test_spend_adds_up() -> None:
    total = Spend(cost_usd=0.5, tokens_in=10, rollouts=1).plus(Spend(cost_usd=0.25, wall_s=3.0))
    assert total == Spend(cost_usd=0.75, tokens_in=10, wall_s=3.0, rollouts=1)
    assert Spend.from_dict(total.to_dict()) == total


def test_preflight_checks_job_and_owner_month() -> None:
    assert preflight(Spend(cost_usd=10), Budget(), owner="a", owner_spent_usd=85.0,
                     owner_limit_usd=100.0) is None
    refused = preflight(Spend(cost_usd=20), Budget(), owner="a", owner_spent_usd=85.0,
                        owner_limit_usd=100.0)
    assert refused is not None and "owner 'a' has spent $85.00 of $100.00" in refused
    refused = preflight(Spend(cost_usd=3), Budget(max_cost_usd=2), owner="a",
                        owner_spent_usd=0, owner_limit_usd=100)
    assert refused is not None and refused.startswith("estimated cost $3.0000")


def test_month_key_is_utc() -> None:
    assert month_key(0.0) == "1970-01"
    assert month_key(1_700_000_000.0) == "2023-11"  # 2023-11-14T22:13:20Z
    assert month_key(1_701_388_799.0) == "2023-11"  # 2023-11-30T23:59:59Z
    assert month_key(1_701_388_800.0) == "2023-12"


def test_budget_policy_limits_and_round_trip() -> None:
    policy = BudgetPolicy(owner_monthly_usd=50.0, owner_limits={"vip": 500.0},
                          prices=PriceTable({"m": Price(input_per_mtok=1, output_per_mtok=2)}))
    assert policy.limit_for("vip") == 500.0
    assert policy.limit_for("anyone") == 50.0
    again = BudgetPolicy.from_dict(policy.to_dict())
    assert again.limit_for("vip") == 500.0
    assert again.prices.cost("m", tokens_in=10**6, tokens_out=10**6) == 3.0
    assert BudgetPolicy().limit_for("x") == 100.0
