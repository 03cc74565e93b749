"""Per-tenant alert policy: whose side an actor is on, the business calendar, who gets silence.

Plain data built once from the settings (settings.py validates them and says what is wrong);
the rules ask it per key and it answers from small caches.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from rhythm.processors.signals.calendar import BusinessCalendar
from rhythm.processors.signals.conversation import OURS, THEIRS, Side
from rhythm.processors.signals.rhythm import SilenceConfig, SilenceRule

ANY_ROLE = "*"


@dataclass(frozen=True, slots=True)
class TenantPolicy:
    calendar: BusinessCalendar = field(default_factory=BusinessCalendar)
    internal_types: frozenset[str] = frozenset({"user", "employee", "agent"})
    external_types: frozenset[str] = frozenset({"contact", "customer", "lead", "visitor"})
    queue: str = "queue:default"


@dataclass(slots=True)
class AlertPolicy:
    default: TenantPolicy = field(default_factory=TenantPolicy)
    tenants: Mapping[str, TenantPolicy] = field(default_factory=dict)
    # (role, entity type) pairs that get silence alerts; role may be "*"
    silence_for: frozenset[tuple[str, str]] = frozenset(
        {("actor", t) for t in ("user", "employee", "agent", "contact", "customer")}
        | {(ANY_ROLE, "account")}
    )
    silence: SilenceConfig = field(default_factory=SilenceConfig)
    _rules: dict[str, SilenceRule] = field(default_factory=dict)

    def tenant(self, tenant: str) -> TenantPolicy:
        return self.tenants.get(tenant, self.default)

    def side(self, tenant: str, entity_type: str) -> Side | None:
        policy = self.tenant(tenant)
        if entity_type in policy.internal_types:
            return OURS
        if entity_type in policy.external_types:
            return THEIRS
        return None

    def queue(self, tenant: str) -> str:
        return self.tenant(tenant).queue

    def calendar(self, tenant: str) -> BusinessCalendar:
        return self.tenant(tenant).calendar

    def silence_rule(self, tenant: str, role: str, entity_type: str) -> SilenceRule | None:
        wanted = (role, entity_type) in self.silence_for or (
            (ANY_ROLE, entity_type) in self.silence_for
        )
        if not wanted or role == "tag":
            return None
        rule = self._rules.get(tenant)
        if rule is None:
            rule = self._rules[tenant] = SilenceRule(self.tenant(tenant).calendar, self.silence)
        return rule
