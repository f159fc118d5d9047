"""Configuration from the environment (``SWITCHBOARD_*``), built once by the CLI and passed down.

Nothing reads the environment at import time: tests build their own ``Settings`` with a
throwaway database and port 0.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

SUPPORTED_DATABASE_SCHEMES = ("sqlite", "postgresql")
# Where ``switchboard up`` keeps the admin key it made on first start (readable by its owner
# only); commands on the same machine use it when SWITCHBOARD_API_KEY is not set.
ADMIN_KEY_FILE = "admin.key"


class Settings(BaseSettings):
    """Every setting Switchboard reads; the README's configuration table mirrors this class."""

    model_config = SettingsConfigDict(env_prefix="SWITCHBOARD_", frozen=True, extra="ignore")

    data_dir: Path = Field(
        default=Path("var"), description="Where the embedded defaults keep their files."
    )
    database_url: str = Field(
        default="",
        description="SQLAlchemy URL of the store; empty means SQLite at DATA_DIR/switchboard.db.",
    )
    redis_url: str = Field(
        default="",
        description="Redis URL for the Celery broker and the decision cache; empty means "
        "embedded (SQLite broker, in-process cache).",
    )
    profiles_address: str = "127.0.0.1:50051"
    segments_address: str = "127.0.0.1:50052"
    routing_address: str = "127.0.0.1:50053"
    widgets_address: str = Field(
        default="127.0.0.1:50054",
        description="The widget port: the routing process serves WidgetService here too, on "
        "an asyncio server that answers warm GetWidgetConfig calls from the cache without "
        "a thread hand-off. Chat widgets should call this port.",
    )
    profiles_metrics_port: int = 9151
    segments_metrics_port: int = 9152
    routing_metrics_port: int = 9153
    metrics_host: str = "127.0.0.1"
    log_level: str = "INFO"
    grpc_max_workers: int = Field(default=32, ge=1, le=1024)
    grpc_shutdown_grace_seconds: float = Field(default=10.0, ge=0)
    call_deadline_seconds: float = Field(
        default=5.0, gt=0, description="Deadline of every cross-service call."
    )
    segment_refresh_seconds: float = Field(
        default=5.0,
        ge=0,
        description="How long routing reuses segment definitions read from the segments service.",
    )
    customer_refresh_seconds: float = Field(
        default=1.0,
        ge=0,
        description="How old a customer record routing may decide on: it reads the profiles "
        "change log at most this often; 0 reads it before every decision.",
    )
    preview_desk_seconds: float = Field(
        default=0.05,
        ge=0,
        description="How old a snapshot of the agents' desk a validate_only RouteConversation "
        "may decide on: it always sees what its own routing process committed before the "
        "call, and what other processes (workers, other routing replicas) wrote at most this "
        "late; 0 reads the desk for every preview.",
    )
    widget_memory_entries: int = Field(
        default=200_000,
        ge=0,
        description="With Redis, how many widget answers the widget port keeps in memory, "
        "forgotten when Redis reports them changed (each costs its size plus about 270 "
        "bytes: about 120 MB when full of 350-byte answers); 0 reads every answer from Redis.",
    )
    widget_refresh_seconds: float = Field(
        default=10.0,
        gt=0,
        description="How often workers bring the widget answers in Redis up to date with "
        "customer, segment and policy changes.",
    )
    reevaluate_seconds: float = Field(
        default=1.0,
        gt=0,
        description="How often workers re-evaluate the segments of customers that changed.",
    )
    nightly_recompute_hour: int = Field(
        default=3,
        ge=0,
        le=23,
        description="Hour (UTC) of the nightly re-evaluation of every customer, for "
        "time-based rules.",
    )
    sla_watch_seconds: float = Field(
        default=30.0,
        gt=0,
        le=60,
        description="How often workers look for SLA warnings and breaches.",
    )
    outreach_dispatch_seconds: float = Field(
        default=2.0,
        gt=0,
        description="How often workers send outreach webhooks that are due (new or retried).",
    )
    outreach_max_attempts: int = Field(
        default=8,
        ge=1,
        le=50,
        description="Attempts per outreach webhook before it is kept as dead (replayable).",
    )
    outreach_retry_base_seconds: float = Field(
        default=30.0,
        gt=0,
        description="Wait before the first retry of a failed webhook; doubles at every retry.",
    )
    outreach_timeout_seconds: float = Field(
        default=5.0, gt=0, le=60, description="How long one webhook POST may take."
    )
    sync_chunk_rows: int = Field(
        default=5000,
        ge=1,
        le=100_000,
        description="Rows of a sync file written per transaction; a killed sync resumes "
        "after the last committed chunk.",
    )
    dashboard_host: str = Field(
        default="127.0.0.1", description="Interface the read-only reports dashboard listens on."
    )
    dashboard_port: int = Field(
        default=8150, ge=0, le=65535, description="HTTP port of the reports dashboard."
    )
    report_deadline_seconds: float = Field(
        default=60.0,
        gt=0,
        description="Deadline of report calls from the CLI and the dashboard: a scorecard "
        "over a million conversations takes seconds.",
    )
    report_hourly_cost: float = Field(
        default=40.0,
        gt=0,
        description="What an hour of agent time costs, for reports' support cost per customer.",
    )
    report_gap_margin: float = Field(
        default=0.1,
        gt=0,
        le=10,
        description="How much worse than the blended figure (as a fraction of it) a "
        "segment's figure must be for the scorecard to flag it.",
    )
    report_churn_segment: str = Field(
        default="lifecycle_churned",
        description="The segment whose members count as churned, for reports' retention.",
    )
    report_stale_after_seconds: float = Field(
        default=172800.0,
        gt=0,
        description="A synced field is stale in reports once its source has not refreshed "
        "it for this long (two days).",
    )
    api_key: SecretStr = Field(
        default=SecretStr(""),
        description="The API key this process presents when it calls a Switchboard service "
        "(services calling each other, workers, the CLI); empty means DATA_DIR/admin.key.",
    )
    tls_cert_file: Path | None = Field(
        default=None,
        description="PEM file with a private key and its certificate chain: when set, every "
        "gRPC port serves TLS only, and clients trust the certificates in it.",
    )
    tls_client_ca_file: Path | None = Field(
        default=None,
        description="PEM file of the certificate authorities that sign callers' client "
        "certificates: when set (with SWITCHBOARD_TLS_CERT_FILE), every gRPC port requires a "
        "client certificate they signed (mutual TLS), and Switchboard's own clients present "
        "the certificate of SWITCHBOARD_TLS_CERT_FILE.",
    )
    tls_service_identities: str = Field(
        default="",
        description="Comma-separated certificate identities (subject alternative names) of "
        "Switchboard's own services: a caller presenting one over mutual TLS is admitted as "
        "admin without an API key.",
    )
    access_refresh_seconds: float = Field(
        default=1.0,
        ge=0,
        description="How soon a key revoked or rotated elsewhere stops working in a running "
        "service: it re-reads the active keys at most this often.",
    )
    usage_retention_days: int = Field(
        default=90, ge=15, description="Raw usage events older than this are pruned."
    )

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, url: str) -> str:
        scheme = url.split(":", 1)[0].split("+", 1)[0]
        if url and scheme not in SUPPORTED_DATABASE_SCHEMES:
            raise ValueError(f"unsupported database {scheme!r}; use sqlite or postgresql")
        return url

    @model_validator(mode="after")
    def _mutual_tls_needs_a_certificate(self) -> Settings:
        if self.tls_client_ca_file and not self.tls_cert_file:
            raise ValueError(
                "SWITCHBOARD_TLS_CLIENT_CA_FILE needs SWITCHBOARD_TLS_CERT_FILE: mutual TLS is "
                "TLS first, and this process presents that certificate when it calls"
            )
        if self.service_identities and not self.tls_client_ca_file:
            raise ValueError(
                "SWITCHBOARD_TLS_SERVICE_IDENTITIES needs SWITCHBOARD_TLS_CLIENT_CA_FILE: an "
                "identity is only proven by a client certificate"
            )
        return self

    @property
    def service_identities(self) -> frozenset[str]:
        return frozenset(
            identity.strip()
            for identity in self.tls_service_identities.split(",")
            if identity.strip()
        )

    @property
    def effective_database_url(self) -> str:
        """The store actually used: the configured URL, or the embedded SQLite file."""
        return self.database_url or f"sqlite:///{self.data_dir / 'switchboard.db'}"

    @property
    def admin_key_file(self) -> Path:
        return self.data_dir / ADMIN_KEY_FILE

    @property
    def client_api_key(self) -> str:
        """The key to present: SWITCHBOARD_API_KEY, else the one ``up`` saved, else none."""
        configured = self.api_key.get_secret_value()
        if configured or not self.admin_key_file.exists():
            return configured
        return self.admin_key_file.read_text().strip()

    @property
    def broker_url(self) -> str:
        """Celery's broker: Redis in production, a SQLite file when nothing is configured."""
        return self.redis_url or f"sqla+sqlite:///{self.data_dir / 'broker.db'}"

    @property
    def uses_embedded_defaults(self) -> bool:
        return not self.database_url and not self.redis_url
