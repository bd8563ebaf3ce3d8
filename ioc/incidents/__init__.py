"""Incidents: one per real-world problem, opened from alerts and citizen reports, routed to the
responsible agency with a deadline, and followed to closure (lifecycle, store, worker)."""
