"""Feature: devices' lives — broker accounts and ACLs (``accounts``), import, change and
decommissioning (``lifecycle``)."""
