-- Readings on TimescaleDB: a hypertable with daily chunks, 1-minute and 1-hour continuous
-- aggregates (real-time: they include not-yet-materialised data), compression. The retention
-- policy is set from IOC_RETENTION_DAYS by ioc.storage.maintenance at start.

CREATE TABLE readings (
    time       timestamptz NOT NULL,
    device_id  text NOT NULL,
    metric     text NOT NULL,
    value      double precision NOT NULL,
    PRIMARY KEY (device_id, metric, time)
);
SELECT create_hypertable('readings', 'time', chunk_time_interval => INTERVAL '1 day');

CREATE MATERIALIZED VIEW readings_1m
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket(INTERVAL '1 minute', time) AS bucket, device_id, metric,
       min(value) AS min, max(value) AS max, sum(value) AS sum, count(*) AS count
FROM readings GROUP BY 1, 2, 3
WITH NO DATA;

-- Hierarchical continuous aggregate (TimescaleDB >= 2.9).
CREATE MATERIALIZED VIEW readings_1h
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket(INTERVAL '1 hour', bucket) AS bucket, device_id, metric,
       min(min) AS min, max(max) AS max, sum(sum) AS sum, sum(count)::bigint AS count
FROM readings_1m GROUP BY 1, 2, 3
WITH NO DATA;

SELECT add_continuous_aggregate_policy('readings_1m',
    start_offset => INTERVAL '7 days', end_offset => INTERVAL '1 minute',
    schedule_interval => INTERVAL '1 minute');
SELECT add_continuous_aggregate_policy('readings_1h',
    start_offset => INTERVAL '7 days', end_offset => INTERVAL '1 hour',
    schedule_interval => INTERVAL '15 minutes');

ALTER TABLE readings SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'device_id, metric',
    timescaledb.compress_orderby = 'time DESC');
-- Compress after the late-data window (IOC_READING_MAX_AGE_S defaults to 7 days).
SELECT add_compression_policy('readings', INTERVAL '8 days');
