"""Which tenant an instance belongs to.

Order of precedence (as in the Rust reference services; docs/architecture.md,
"Derived values"):

1. an explicit override (``dicomflow publish --tenant T``);
2. the tenant private tag in the data set (default (1211,1217));
3. the calling AE title, looked up in ``ingest.ae_tenants``;
4. ``storage.default_tenant``.

The tenant becomes a folder name and a Kafka key, so whatever the source it
must pass :func:`~dicomflow.ingest.uids.require_tenant`. A data set that
names an unsafe tenant is refused rather than silently moved to another
tenant: filing it elsewhere would cross tenants.
"""

from __future__ import annotations

from collections.abc import Mapping

from dicomflow.errors import ConfigError
from dicomflow.ingest.exceptions import InvalidTenantError
from dicomflow.ingest.uids import require_tenant


class TenantResolver:
    """Resolves the tenant of an instance from its tag, the calling AE, or the default.

    Raises:
        ConfigError: (constructor) the default, the override or an
            ``ae_tenants`` value is not a valid tenant id.
    """

    def __init__(self, ae_tenants: Mapping[str, str], default: str, *, override: str | None = None) -> None:
        self._by_ae: dict[str, str] = {}
        for ae, tenant in ae_tenants.items():
            self._by_ae[ae.strip()] = _checked(tenant, f"ingest.ae_tenants.{ae}")
        self.default = _checked(default, "storage.default_tenant")
        self.override = None if override is None else _checked(override, "--tenant")

    def resolve(self, tag_value: str | None, calling_ae: str | None) -> str:
        """The tenant for one instance.

        Raises:
            InvalidTenantError: the data set's tenant tag holds an unsafe id.
        """
        if self.override is not None:
            return self.override
        if tag_value:
            return require_tenant(tag_value)
        if calling_ae:
            mapped = self._by_ae.get(calling_ae.strip())
            if mapped is not None:
                return mapped
        return self.default


def _checked(tenant: str, key: str) -> str:
    try:
        return require_tenant(tenant)
    except InvalidTenantError as exc:
        raise ConfigError(key, "settings", exc.reason) from exc


__all__ = ["TenantResolver"]
