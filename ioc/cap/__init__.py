"""Feature: OASIS CAP 1.2 messages from alerts (``message``)."""
