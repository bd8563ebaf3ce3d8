"""PostgreSQL / TimescaleDB storage: migrations, the device registry, reading queries, upkeep."""

from ioc.storage.migrations import Flavour, FlavourChoice, FlavourError, MigrationError, migrate

__all__ = ["Flavour", "FlavourChoice", "FlavourError", "MigrationError", "migrate"]
