"""Portal settings (env prefix ``WENZHENG_PORTAL_``; the HTTP port is ``WENZHENG_PORT``, default 8080)."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_SECRET = "local-only-portal-secret-change-me"


def _local(service: str, port: int) -> str:
    """`make run`'s address of a service (its port setting, as deploy/local/services.txt names it)."""
    return f"http://127.0.0.1:{os.environ.get(f'WENZHENG_{service}_PORT', port)}"


class PortalSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="WENZHENG_PORTAL_", extra="ignore")

    intake_url: str = Field(default_factory=lambda: _local("INTAKE", 8000), description="intake's HTTP API")
    stats_url: str = Field(default_factory=lambda: _local("STATS", 8003), description="stats' HTTP API")
    secret: str = Field(DEFAULT_SECRET, description="signs the session cookie and CSRF tokens; required in production")
    session_minutes: int = Field(480, ge=5, description="a staff session's longest life (the intake token may "
                                 "end it sooner)")
    cookie_secure: bool | None = Field(None, description="Secure cookies; default: on in production")
    request_timeout_seconds: float = Field(10.0, gt=0, description="per call to intake or stats")
    connect_timeout_seconds: float = Field(3.0, gt=0)
    max_connections: int = Field(100, ge=1, description="pooled connections per back end")
    upload_max_bytes: int = Field(5 * 1024 * 1024, ge=1, description="largest photo accepted (intake's limit too)")
    upload_max_files: int = Field(6, ge=0, description="photos per post")
    reference_cache_seconds: float = Field(300.0, ge=0, description="how long the unit directory is reused")
    bulletin_cache_seconds: float = Field(60.0, ge=0, description="how long a month's bulletin (public figures) "
                                          "is reused before stats is asked again")
    vendor_dir: Path = Field(ROOT / "node_modules", description="the npm packages installed by `make` (npm ci)")
    issuing_office: str = Field("赣州市五型政府建设办公室", description="the bulletin's issuing office")
    site_name: str = Field("问政赣州", description="the name in every page's header and title")
    page_size: int = Field(20, ge=1, le=200)

    def for_environment(self, environment: str) -> PortalSettings:
        """These settings, checked for ``environment`` (the common ``WENZHENG_ENVIRONMENT``): production refuses
        the development secret and defaults to Secure cookies."""
        production = environment == "production"
        if production and self.secret == DEFAULT_SECRET:
            raise ValueError("WENZHENG_PORTAL_SECRET must be set in production")
        if self.cookie_secure is None:
            return self.model_copy(update={"cookie_secure": production})
        return self


def http_port() -> int:
    return int(os.environ.get("WENZHENG_PORT", os.environ.get("WENZHENG_PORTAL_PORT", "8080")))
