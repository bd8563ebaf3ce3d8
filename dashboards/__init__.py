"""Operator dashboards. ``wall/`` is the wall screen, shipped as package data and served by the
API at /wall/ (ioc/api/site.py); ``grafana/`` is Grafana provisioning used by docker-compose,
not part of the Python package."""
