-- A starting KPI publisher reads the last kpi frame (ioc.kpi._last_published_digest) so restarts
-- and extra API processes do not repeat unchanged figures; without this index that lookup would
-- walk every readings frame of the feed's retention window.
CREATE INDEX feed_events_kpi ON feed_events (seq) WHERE type = 'kpi';
