"""PostgreSQL / TimescaleDB storage: migrations, the device registry, reading queries, upkeep."""

from ioc.storage.migrations import Flavour, MigrationError, migrate

__all__ = ["Flavour", "MigrationError", "migrate"]
