"""Prices per model and the budget caps built from settings and flags.

Prices come only from the ``[prices]`` settings table (model -> per_hour or per_second and
a currency): they change and differ by region, so none are built in. The local engine has
no provider to pay, so its models cost 0 unless the table says otherwise.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from pipeline.errors import ConfigError, FailureCode
from pipeline.planning.budget import ANY_MODEL, Caps
from pipeline.settings import Settings


@dataclass(frozen=True, slots=True)
class PriceTable:
    """The ``[prices]`` table as a frozen value: model -> (price per audio second, currency)."""

    rates: Mapping[str, tuple[float, str]] = field(default_factory=dict)

    @classmethod
    def of(cls, settings: Settings) -> PriceTable:
        return cls({m: (p.rate_per_s, p.currency) for m, p in settings.prices.items()})

    def rate(self, engine: str, model: str) -> tuple[float | None, str | None]:
        """(price per audio second, currency) of ``model``; (None, None) when unknown."""
        found = self.rates.get(model)
        if found is not None:
            return found
        if engine == "local":
            return 0.0, None
        return None, None

    def cost(self, usage: Iterable[tuple[str, str, float]]) -> tuple[float | None, str | None]:
        """What ``(engine, model, audio seconds)`` rows cost, and in which currency. None
        when a model has no price, or the prices are in more than one currency (they
        cannot be added up)."""
        total = 0.0
        currencies: set[str] = set()
        for engine, model, seconds in usage:
            rate, currency = self.rate(engine, model)
            if rate is None:
                return None, None
            total += rate * seconds
            if currency:
                currencies.add(currency)
        if len(currencies) > 1:
            return None, None
        return total, next(iter(currencies), None)


def rate_of(settings: Settings, engine: str, model: str) -> tuple[float | None, str | None]:
    """(price per audio second, currency) of ``model``; (None, None) when unknown."""
    return PriceTable.of(settings).rate(engine, model)


def budget_caps(
    settings: Settings,
    engine: str,
    models: Iterable[str],
    *,
    max_audio_hours: float | None = None,
    max_cost: float | None = None,
    others: bool = False,
) -> tuple[Caps, str | None]:
    """The caps for a run or batch (flags over ``budget.*`` settings) and the currency
    costs are counted in. A cost cap needs a price for every model the items use:
    ConfigError otherwise (a usage error at the CLI, exit 2). ``others``: the items'
    models are not all known yet (a streamed submit), so every other model of the price
    table (in the same currency) is priced too."""
    hours = max_audio_hours if max_audio_hours is not None else settings.budget.max_audio_hours
    cost = max_cost if max_cost is not None else settings.budget.max_cost
    return caps_for(settings, engine, models, max_audio_hours=hours, max_cost=cost, others=others)


def caps_for(
    settings: Settings,
    engine: str,
    models: Iterable[str],
    *,
    max_audio_hours: float | None,
    max_cost: float | None,
    others: bool = False,
) -> tuple[Caps, str | None]:
    """Exactly these caps (no fallback to ``budget.*``), with the models' prices (and,
    with ``others``, the rest of the table's in the same currency). Admission prices each
    item by its own model; an item whose model has no price never fits under a cost cap.
    The local engine's models cost 0 unless the table says otherwise (``"*"``)."""
    hours, cost = max_audio_hours, max_cost
    table = PriceTable.of(settings)
    prices: dict[str, float] = {}
    currencies: set[str] = set()
    missing: list[str] = []
    for model in dict.fromkeys(models):
        rate, currency = table.rate(engine, model)
        if rate is None:
            missing.append(model)
            continue
        prices[model] = rate
        if currency:
            currencies.add(currency)
    if cost is not None and missing:
        raise ConfigError(
            FailureCode.CONFIG_INVALID,
            f"--max-cost needs a price for {', '.join(missing)}: add it to the "
            "[prices] table of your settings (see README, Plan and budgets)",
        )
    if cost is not None and len(currencies) > 1:
        raise ConfigError(
            FailureCode.CONFIG_INVALID,
            f"--max-cost cannot add up prices in {', '.join(sorted(currencies))}",
        )
    currency = next(iter(currencies)) if currencies else None
    if others:
        for model, (rate, unit) in table.rates.items():
            if model not in prices and (currency is None or unit == currency):
                prices[model] = rate
                currency = unit
    if engine == "local":
        prices.setdefault(ANY_MODEL, 0.0)
    caps = Caps(max_audio_s=None if hours is None else hours * 3600, max_cost=cost, prices=prices)
    return caps, currency
