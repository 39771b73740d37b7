"""Intake settings (env prefix ``WENZHENG_INTAKE_``; the HTTP port is ``WENZHENG_PORT``)."""

from __future__ import annotations

import os

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_SECRET = "local-development-secret-change-me"


class IntakeSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="WENZHENG_INTAKE_", extra="ignore")

    database: str = Field("wenzheng_intake", description="the MongoDB database intake owns")
    credentials_file: str = "var/local/credentials.json"
    secret: str = Field(DEFAULT_SECRET, description="HMAC key for poster_ref and rating tokens")
    source: str = "urn:wenzheng:intake"

    # Rate limits: an in-process sliding window, so each replica counts on its own.
    rate_limit_enabled: bool = True
    rate_limit_per_phone: int = Field(5, ge=1)
    rate_limit_phone_window_seconds: float = Field(3600, gt=0)
    rate_limit_per_ip: int = Field(120, ge=1)
    rate_limit_ip_window_seconds: float = Field(60, gt=0)

    sms_gateway_token: str | None = Field(
        None, description="shared secret the SMS gateway sends in the X-Sms-Gateway-Token header of its "
                          "webhook calls; required in production, optional locally")

    auto_reopen_on_unsatisfied: bool = False
    reopen_working_days: int = Field(5, ge=1, le=30)
    return_window_working_days: int = Field(2, ge=0, le=10)

    relay_enabled: bool = True
    relay_bootstrap: str | None = Field(None, description="Kafka for the outbox relay (default: the common one)")
    relay_window: int = Field(64, ge=1, le=500, description="groups of each writer the relay reads in one pass")
    relay_abandon_seconds: float = Field(
        30, gt=0, description="a group without its done marker this long after its intent is settled from its "
                              "documents (its writer died between the two)")
    relay_idle_seconds: float = Field(0.2, gt=0, description="poll interval when nothing is pending")
    relay_min_interval_seconds: float = Field(
        0.05, ge=0, description="at least this long between two drains under load, so each drain carries more")
    relay_lease_seconds: float = Field(10, gt=0)

    # Load shedding: past any of these bounds, new posts get 503 with Retry-After (staff commands never)
    shed_enabled: bool = True
    shed_max_in_flight_posts: int = Field(128, ge=0, description="posts handled at once by this process")
    shed_max_queued_writes: int = Field(1000, ge=0, description="requests waiting for the outbox's next group")
    shed_max_write_seconds: float = Field(1.0, gt=0, description="how long one group of writes may take")
    shed_max_outbox_age_seconds: float = Field(10, gt=0, description="the oldest unpublished event's age")
    shed_max_loop_lag_seconds: float = Field(0.2, gt=0, description="how late the event loop may run its timers "
                                             "(the wait before a request's handler starts)")
    shed_retry_after_seconds: int = Field(1, ge=1, le=60, description="the Retry-After of a shed post")

    contact_retention_days: float = Field(
        180, gt=0, description="a citizen's contact is erased this many days after the case is closed (PIPL)")
    retention_enabled: bool = True
    retention_interval_seconds: float = Field(3600, gt=0, description="how often the erasure job runs")

    consumer_enabled: bool = True
    consumer_group: str = "wenzheng-intake"
    follow_case_events: bool = Field(
        True, description="keep the in-memory list index current with the writes of other intake replicas by "
                          "reading the case-events topic (one intake alone is current without it)")

    page_size_max: int = 200

    wechat_enabled: bool = Field(False, description="serve the WeChat official account's message webhook")
    wechat_app_id: str | None = Field(None, description="the official account's AppID")
    wechat_app_secret: str | None = Field(None, description="its AppSecret (for the notifier's customer messages)")
    wechat_token: str | None = Field(None, description="the token configured in 服务器配置: signs every push")
    wechat_encoding_aes_key: str | None = Field(None, description="EncodingAESKey, for safe (encrypted) mode")
    wechat_reply_seconds: float = Field(4.5, gt=0, lt=5, description="answer within WeChat's 5 s limit")

    open311_jurisdiction_id: str = Field("ganzhou.gov.cn", description="the jurisdiction_id Open311 serves")
    open311_changeset: str = Field("2026-12-01T00:00:00Z", description="discovery: when the endpoints last changed")
    open311_contact: str = Field("赣州市人民政府办公室 12345 政务服务便民热线", description="discovery: who runs it")
    open311_key_service: str = Field("向市政务服务数据管理局申请 API key", description="discovery: how to get a key")
    max_body_bytes: int = Field(64 * 1024, ge=1024, description="largest JSON/form/XML request body (413 above)")
    max_json_depth: int = Field(32, ge=2, le=200, description="deepest JSON nesting accepted (422 above)")
    attachments_dir: str = Field("var/attachments", description="where the filesystem AttachmentStore keeps photos")
    attachment_max_bytes: int = Field(5 * 1024 * 1024, ge=1, description="largest photo accepted (413 above)")
    # People and sign-in
    session_hours: float = Field(8, gt=0, le=24 * 30, description="a sign-in token's lifetime")
    session_cache_seconds: float = Field(
        30, ge=0, le=30, description="a validated token is trusted this long without asking the database, so a "
                                     "logout or a disabled account takes effect everywhere within a minute")
    login_rate_per_ip: int = Field(30, ge=1, description="sign-in attempts per address per window")
    login_rate_window_seconds: float = Field(60, gt=0)
    lockout_failures: int = Field(5, ge=1)
    lockout_minutes: float = Field(15, gt=0)
    password_time_cost: int = Field(3, ge=1, description="argon2id passes")
    password_memory_kib: int = Field(65536, ge=1024, description="argon2id memory")
    password_parallelism: int = Field(4, ge=1)
    trusted_proxies: list[str] = Field(
        default_factory=list, description="addresses of proxies (the portal, a load balancer) whose X-Forwarded-For "
                                          "names the real client, for the sign-in limit and the audit trail")
    cookie_secure: bool | None = Field(None, description="Secure session cookies (default: on in production)")

    # Optional OpenID Connect sign-in against the city's identity provider (off unless an issuer is set)
    oidc_issuer: str | None = None
    oidc_client_id: str | None = None
    oidc_client_secret: str | None = None
    oidc_label: str = "统一身份认证登录"
    oidc_username_claim: str = "preferred_username"
    oidc_scopes: str = "openid profile"
    oidc_state_seconds: int = Field(default=600, ge=30, le=3600, description="how long a started sign-in stays valid")
    oidc_leeway_seconds: int = Field(default=60, ge=0, le=300, description="clock skew allowed on exp/iat")
    oidc_redirect_uris: list[str] = Field(default_factory=list, description="allowed redirect_uri values (empty: any)")


    # ------------------------------------------------------------------ production
    def missing_wechat_secrets(self) -> list[str]:
        """With the WeChat channel on, the credentials it cannot work without."""
        if not self.wechat_enabled:
            return []
        return [f"WENZHENG_INTAKE_{name.upper()}" for name in ("wechat_app_id", "wechat_app_secret", "wechat_token")
                if not getattr(self, name)]

    def missing_production_secrets(self) -> list[str]:
        """The secrets production must set (the local defaults are public)."""
        missing = []
        if self.secret in (DEFAULT_SECRET, ""):
            missing.append("WENZHENG_INTAKE_SECRET")
        if not self.sms_gateway_token:
            missing.append("WENZHENG_INTAKE_SMS_GATEWAY_TOKEN")
        return missing + self.missing_wechat_secrets()

    def check_production(self, environment: str, missing: list[str] | None = None) -> None:
        """In production, refuse to start while a secret is missing (``missing``: all of them by default)."""
        if environment != "production":
            return
        missing = self.missing_production_secrets() if missing is None else missing
        if missing:
            raise SystemExit(f"intake: set {', '.join(missing)}; refusing to start in production without them")


def http_port() -> int:
    return int(os.environ.get("WENZHENG_PORT", "8000"))
