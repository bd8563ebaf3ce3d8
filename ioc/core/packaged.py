"""Where the packaged data lives: ``ioc/site_data/`` (site, routing, calendar, tides, KPI targets,
risk levels, notification routes, base layer), read by every layer as its default."""

from __future__ import annotations

from pathlib import Path
from typing import Final

SITE_DATA: Final = Path(__file__).resolve().parent.parent / "site_data"
