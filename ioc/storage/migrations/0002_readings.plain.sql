-- Readings on plain PostgreSQL: declaratively partitioned by day (UTC), partitions created ahead
-- by the service (ioc_ensure_readings_partitions) and dropped for retention; 1-minute and 1-hour
-- rollups maintained by the service (ioc.storage.maintenance).

CREATE TABLE readings (
    time       timestamptz NOT NULL,
    device_id  text NOT NULL,
    metric     text NOT NULL,
    value      double precision NOT NULL,
    -- Doubles as the duplicate filter: the same (device, metric, time) is stored once.
    PRIMARY KEY (device_id, metric, time)
) PARTITION BY RANGE (time);

CREATE FUNCTION ioc_ensure_readings_partitions(lo timestamptz, hi timestamptz)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    day date := (lo AT TIME ZONE 'UTC')::date;
    last date := (hi AT TIME ZONE 'UTC')::date;
    created integer := 0;
    part text;
BEGIN
    -- Serialise creators: two writers creating the same partition would otherwise race.
    PERFORM pg_advisory_xact_lock(hashtext('ioc_readings_partitions'));
    WHILE day <= last LOOP
        part := 'readings_p' || to_char(day, 'YYYYMMDD');
        IF to_regclass(part) IS NULL THEN
            EXECUTE format(
                'CREATE TABLE %I PARTITION OF readings FOR VALUES FROM (%L) TO (%L)',
                part, (day::timestamp AT TIME ZONE 'UTC'), ((day + 1)::timestamp AT TIME ZONE 'UTC'));
            created := created + 1;
        END IF;
        day := day + 1;
    END LOOP;
    RETURN created;
END $$;

CREATE TABLE readings_1m (
    bucket     timestamptz NOT NULL,
    device_id  text NOT NULL,
    metric     text NOT NULL,
    min        double precision NOT NULL,
    max        double precision NOT NULL,
    sum        double precision NOT NULL,
    count      bigint NOT NULL,
    PRIMARY KEY (device_id, metric, bucket)
);

CREATE TABLE readings_1h (LIKE readings_1m INCLUDING ALL);
