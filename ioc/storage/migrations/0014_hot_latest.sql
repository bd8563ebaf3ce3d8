-- Room on every page of the two tables ingest rewrites on every batch (docs/benchmarks.md,
-- "Ingest"): `latest_readings` (newest value per device and metric) and `device_state`
-- (last_seen_at per device). Neither updates an indexed column, so with free space on the page
-- PostgreSQL updates in place (HOT: no new index entry, no index page dirtied); at the default
-- fillfactor 100 every update went to another page with a new primary-key entry. Both tables are
-- small (one row per device and metric), so halving their density costs little. CLUSTER
-- rewrites the pages already written at the new fillfactor.
ALTER TABLE latest_readings SET (fillfactor = 50);
ALTER TABLE device_state SET (fillfactor = 50);
CLUSTER latest_readings USING latest_readings_pkey;
CLUSTER device_state USING device_state_pkey;
