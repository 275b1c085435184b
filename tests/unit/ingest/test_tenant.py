"""Tenant resolution: override, tenant tag, calling AE map, default."""

from __future__ import annotations

import pytest

from dicomflow.errors import ConfigError
from dicomflow.ingest.exceptions import InvalidTenantError
from dicomflow.ingest.tenant import TenantResolver


def resolver(**kwargs: str) -> TenantResolver:
    return TenantResolver({"CT_SCANNER": "radiology", "MR1 ": "neuro"}, "default", **kwargs)


def test_the_tenant_tag_wins_over_the_ae_map() -> None:
    assert resolver().resolve("oncology", "CT_SCANNER") == "oncology"


def test_the_calling_ae_map_applies_without_a_tag() -> None:
    assert resolver().resolve(None, "CT_SCANNER") == "radiology"
    assert resolver().resolve("", "CT_SCANNER") == "radiology"


def test_ae_titles_are_compared_without_padding() -> None:
    assert resolver().resolve(None, "MR1") == "neuro"
    assert resolver().resolve(None, " CT_SCANNER ") == "radiology"


def test_the_default_tenant_applies_otherwise() -> None:
    assert resolver().resolve(None, "UNKNOWN_AE") == "default"
    assert resolver().resolve(None, None) == "default"


def test_an_override_wins_over_everything() -> None:
    assert resolver(override="research").resolve("oncology", "CT_SCANNER") == "research"


@pytest.mark.parametrize("value", ["../evil", "a/b", "..", "tenant with spaces"])
def test_an_unsafe_tenant_tag_is_refused_not_rerouted(value: str) -> None:
    with pytest.raises(InvalidTenantError):
        resolver().resolve(value, "CT_SCANNER")


def test_bad_tenant_settings_are_config_errors_naming_the_key() -> None:
    with pytest.raises(ConfigError, match=r"ingest\.ae_tenants\.CT"):
        TenantResolver({"CT": "../x"}, "default")
    with pytest.raises(ConfigError, match=r"storage\.default_tenant"):
        TenantResolver({}, "a/b")
    with pytest.raises(ConfigError, match="--tenant"):
        TenantResolver({}, "default", override="..")
