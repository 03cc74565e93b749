"""The mail connector's settings (`RHYTHM_MAIL_*`; Kafka's connection: `RHYTHM_KAFKA_*`).

Who is one of ours is the tenant's setting the alert rules use (`RHYTHM_PROCESSOR_TENANTS`,
`RHYTHM_PROCESSOR_INTERNAL_TYPES` / `_EXTERNAL_TYPES`), extended with the tenant's mail
domains (`internal_domains` there, per tenant or global): an address at one of those domains
(or a subdomain) is the tenant's first internal type (`user` by default), any other address
its first external type (`contact`), so the `unanswered` rule sees mail exactly as the
tenant's own events. `RHYTHM_MAIL_INTERNAL_DOMAINS` overrides the domains for this connector.

Secrets (the IMAP password, the pseudonymisation key) are `SecretStr`, or read from a file
at use: printed and logged as `**********`, never in a log line or a metric label.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from rhythm.producers.config import ClientSettings
from rhythm.schemas.rules import TENANT_PATTERN

Weight = Literal["one", "recipients", "split"]
Security = Literal["tls", "starttls", "none"]


def default_state_dir() -> Path:
    """`<repo>/.rhythm/mail-connector` in a source checkout, else under the working dir."""
    root = Path(__file__).resolve().parents[5]
    if (root / "pyproject.toml").is_file() and (root / "producers").is_dir():
        return root / ".rhythm" / "mail-connector"
    return Path.cwd() / ".rhythm" / "mail-connector"


class MailSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RHYTHM_MAIL_", extra="ignore")

    client: ClientSettings = Field(default_factory=ClientSettings)
    tenant: str = Field("default", pattern=TENANT_PATTERN, description="Whose mail this is.")
    state_dir: Path = Field(
        default_factory=default_state_dir,
        description="Checkpoints (checkpoints.json) and the thread/publish index (index.db).",
    )
    # -- who is who -----------------------------------------------------------------------
    internal_domains: list[str] | None = Field(
        None, description="Our mail domains (default: the processors' tenant setting)."
    )
    internal_type: str | None = Field(
        None, description="Actor type of our people (default: the tenant's first internal type)."
    )
    external_type: str | None = Field(
        None, description="Actor type of everyone else (default: its first external type)."
    )
    # -- privacy --------------------------------------------------------------------------
    subjects: bool = Field(False, description="Publish the Subject (off: never leaves).")
    pseudonymise: bool = Field(
        False, description="Addresses become keyed HMAC-SHA256 pseudonyms (p-<hex>)."
    )
    hmac_key: SecretStr | None = Field(None, description="The pseudonyms' key...")
    hmac_key_file: Path | None = Field(None, description="...or a file holding it.")
    identify: bool = Field(
        False,
        description="Publish each of our people met in mail to the people directory "
        "(identify: email, internal) so heads-ups reach them; off when another system keeps "
        "the directory (the latest record wins) or addresses are pseudonymised.",
    )
    # -- the mapping ----------------------------------------------------------------------
    weight: Weight = Field(
        "one",
        description="Each event's weight: one; recipients (the message's recipient count); "
        "split (1/recipients: a message weighs 1 in all).",
    )
    max_recipients: int = Field(
        50, ge=1, le=1000, description="Events per message at most (the first To/Cc)."
    )
    max_skew_s: float = Field(
        86_400.0,
        gt=0,
        description="A Date this far from the delivery time (Received, INTERNALDATE) is not "
        "believed: the delivery time is used.",
    )
    max_future_s: float = Field(900.0, ge=0, description="A Date ahead of delivery by more...")
    # -- IMAP -----------------------------------------------------------------------------
    imap_host: str | None = None
    imap_port: int | None = Field(None, ge=1, le=65535, description="Default 993 (tls), else 143.")
    imap_security: Security = Field("tls", description="tls (993), starttls (143) or none.")
    imap_user: str | None = None
    imap_password: SecretStr | None = None
    imap_password_file: Path | None = Field(None, description="Read at each login.")
    imap_ca_file: Path | None = Field(None, description="Trust this CA (else the system's).")
    imap_timeout_s: float = Field(60.0, gt=0)
    mailboxes: list[str] = Field(
        default_factory=lambda: ["INBOX", "Sent"], description="Mailboxes synced, in order."
    )
    idle: bool = Field(True, description="IMAP IDLE on the first mailbox between passes.")
    poll_s: float = Field(60.0, gt=0, description="A full pass at least this often (IDLE or not).")
    batch: int = Field(200, ge=1, le=5000, description="Messages fetched and published at once.")
    since_days: float = Field(
        30.0,
        ge=0,
        description="A mailbox's first sync reads mail delivered this many days back (0: all); "
        "older history is for `rhythm import mbox` before the processors start.",
    )
    retry_max_s: float = Field(60.0, gt=0, description="Reconnect backoff cap.")
    metrics_host: str = Field("127.0.0.1", description="Where /metrics and /healthz bind.")
    metrics_port: int = Field(
        9470, ge=0, le=65535, description="rhythm connect imap's /metrics, /healthz; 0 = none."
    )
    stall_after_s: float = Field(
        300.0, gt=0, description="/healthz fails when the sync loop has not turned this long."
    )

    @field_validator("internal_domains")
    @classmethod
    def _domains(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else normal_domains(value)

    def account(self) -> str:
        """The checkpoints' name for this account: user@host:port, no secret in it."""
        return f"{self.imap_user or ''}@{self.imap_host or ''}:{self.port()}"

    def port(self) -> int:
        if self.imap_port is not None:
            return self.imap_port
        return 993 if self.imap_security == "tls" else 143

    def password(self) -> str:
        if self.imap_password_file is not None:
            return self.imap_password_file.read_text().strip("\r\n")
        if self.imap_password is not None:
            return self.imap_password.get_secret_value()
        raise ValueError("no IMAP password: set RHYTHM_MAIL_IMAP_PASSWORD(_FILE)")

    def key(self) -> bytes | None:
        """The pseudonyms' key, or None when addresses are kept."""
        if not self.pseudonymise:
            return None
        if self.hmac_key_file is not None:
            return self.hmac_key_file.read_bytes().strip()
        if self.hmac_key is not None:
            return self.hmac_key.get_secret_value().encode()
        raise ValueError("pseudonymise needs RHYTHM_MAIL_HMAC_KEY(_FILE)")


@dataclass(frozen=True, slots=True)
class Sides:
    """How an address becomes an actor: our domains, and the two actor types."""

    domains: tuple[str, ...]
    internal_type: str
    external_type: str

    def internal(self, address: str) -> bool:
        domain = address.rpartition("@")[2].lower()
        return any(domain == d or domain.endswith("." + d) for d in self.domains)

    def actor_type(self, address: str) -> str:
        return self.internal_type if self.internal(address) else self.external_type


def tenant_sides(settings: MailSettings) -> Sides:
    """The tenant's sides as the processors' settings define them (the same environment)."""
    from rhythm.processors.settings import ProcessorSettings

    processors = ProcessorSettings()
    tenant = processors.tenants.get(settings.tenant)
    internal = (tenant and tenant.internal_types) or processors.internal_types
    external = (tenant and tenant.external_types) or processors.external_types
    domains = settings.internal_domains
    if domains is None:
        given = tenant.internal_domains if tenant is not None else None
        domains = given if given is not None else processors.internal_domains
    internal_type = settings.internal_type or internal[0]
    external_type = settings.external_type or external[0]
    if internal_type not in internal or external_type not in external:
        raise ValueError(
            f"tenant {settings.tenant}: the mail actor types must be among its internal "
            f"{internal} and external {external} types"
        )
    if not domains:
        raise ValueError(
            f"tenant {settings.tenant}: no mail domains of ours: set internal_domains in "
            "RHYTHM_PROCESSOR_TENANTS (or RHYTHM_PROCESSOR_INTERNAL_DOMAINS, "
            "RHYTHM_MAIL_INTERNAL_DOMAINS)"
        )
    return Sides(tuple(normal_domains(domains)), internal_type, external_type)


def normal_domains(domains: list[str]) -> list[str]:
    """`@Acme.COM ` -> `acme.com`; blanks left out."""
    return [d.strip().lower().lstrip("@.") for d in domains if d.strip()]
