"""One typed, frozen settings object, built once by the CLI and passed in.

- :mod:`.schema`: the sections (frozen dataclasses) and :class:`Settings`
  (the DICOMweb server's and the image workers' sections in :mod:`.web`);
- :mod:`.loader`: :func:`load_settings` from defaults, a TOML or JSON file and
  ``DICOMFLOW_*`` variables;
- :mod:`.reference`: the reference services' ``application.json`` keys;
- :mod:`.export`: :func:`as_dict` for ``config show`` (secrets masked) and
  :func:`to_child_env`, the one way settings reach a child process (read
  back there with :func:`from_child_env`);
- :mod:`.deprecated`: keys that moved to another section, still read at
  their old place with a :class:`DeprecatedSettingWarning`.
"""

from dicomflow.settings.deprecated import DeprecatedSettingWarning
from dicomflow.settings.derived import ohif_dist
from dicomflow.settings.export import as_dict, to_child_env
from dicomflow.settings.loader import default_config_path, from_child_env, is_set, load_settings
from dicomflow.settings.qr import QrSettings
from dicomflow.settings.schema import (
    DEFAULT_SUPPORTED_TS,
    ClickHouseSettings,
    Compression,
    ConsumerSettings,
    DatabaseSettings,
    DorisSettings,
    ImagesSettings,
    IngestSettings,
    KafkaSettings,
    MetricsSettings,
    OAuth2Settings,
    ReceiverSettings,
    Settings,
    StackSettings,
    StorageS3Settings,
    StorageSettings,
    TlsSettings,
    TopicSettings,
    ViewerSettings,
    WarehouseSettings,
    WebSettings,
    tenant_tag,
)

__all__ = [
    "DEFAULT_SUPPORTED_TS",
    "ClickHouseSettings",
    "Compression",
    "ConsumerSettings",
    "DatabaseSettings",
    "DeprecatedSettingWarning",
    "DorisSettings",
    "ImagesSettings",
    "IngestSettings",
    "KafkaSettings",
    "MetricsSettings",
    "OAuth2Settings",
    "QrSettings",
    "ReceiverSettings",
    "Settings",
    "StackSettings",
    "StorageS3Settings",
    "StorageSettings",
    "TlsSettings",
    "TopicSettings",
    "ViewerSettings",
    "WarehouseSettings",
    "WebSettings",
    "as_dict",
    "default_config_path",
    "from_child_env",
    "is_set",
    "load_settings",
    "ohif_dist",
    "tenant_tag",
    "to_child_env",
]
