"""The portal's settings checked for production in its one settings class (issue #19)."""

from __future__ import annotations

import pytest

from services.portal.config import DEFAULT_SECRET, PortalSettings


def test_production_refuses_the_development_secret_and_defaults_to_secure_cookies() -> None:
    with pytest.raises(ValueError, match="WENZHENG_PORTAL_SECRET"):
        PortalSettings(secret=DEFAULT_SECRET).for_environment("production")
    assert PortalSettings(secret="s3cret").for_environment("production").cookie_secure is True
    assert PortalSettings().for_environment("local").cookie_secure is False  # the default secret is fine locally
    assert PortalSettings(secret="s", cookie_secure=False).for_environment("production").cookie_secure is False
