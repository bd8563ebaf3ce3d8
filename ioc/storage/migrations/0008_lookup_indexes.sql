-- A starting KPI publisher reads the last kpi frame (ioc.kpi._last_published_digest) so restarts
-- and extra API processes do not repeat unchanged figures; without this index that lookup would
-- walk every readings frame of the feed's retention window.
CREATE INDEX feed_events_kpi ON feed_events (seq) WHERE type = 'kpi';

-- The alerts behind an incident (dispatch payloads, merges) are looked up by incident.
CREATE INDEX incident_alerts_incident ON incident_alerts (incident_id);
