-- Core tables shared by every storage flavour (plain PostgreSQL and TimescaleDB).
-- Table and column names of `devices` and `readings` are part of the v1 contract: analysts and
-- Grafana query them directly.

CREATE TABLE devices (
    id          text PRIMARY KEY,
    kind        text NOT NULL,
    city        text NOT NULL,
    ward        text,
    name        text NOT NULL,
    lat         double precision NOT NULL,
    lon         double precision NOT NULL,
    attributes  jsonb NOT NULL DEFAULT '{}'::jsonb,
    source      text NOT NULL DEFAULT 'api',      -- 'site' (site file) or 'api' (registered over REST)
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX devices_kind_city ON devices (kind, city);

-- Liveness per device: the retained status topic and the time of the newest reading.
CREATE TABLE device_state (
    device_id          text PRIMARY KEY REFERENCES devices (id) ON DELETE CASCADE,
    online             boolean,
    status_changed_at  timestamptz,
    last_seen_at       timestamptz
);

-- The newest value of every metric of every device, for the wall screen.
CREATE TABLE latest_readings (
    device_id  text NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    metric     text NOT NULL,
    time       timestamptz NOT NULL,
    value      double precision NOT NULL,
    PRIMARY KEY (device_id, metric)
);

-- Discrete events a device detected (a camera's accident, a lamp controller's fault).
CREATE TABLE device_events (
    time         timestamptz NOT NULL,
    device_id    text NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    type         text NOT NULL,
    data         jsonb NOT NULL DEFAULT '{}'::jsonb,
    received_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (device_id, time, type)
);
CREATE INDEX device_events_time ON device_events (time DESC);

-- MQTT messages that failed decoding. Identical bytes on the same topic are one row with a
-- count, so a device stuck sending the same bad payload cannot flood the table; the total is
-- bounded further by pruning the oldest rows (IOC_DEAD_LETTER_LIMIT).
CREATE TABLE dead_letters (
    id                 bigserial PRIMARY KEY,
    topic              text NOT NULL,
    payload            bytea NOT NULL,
    payload_sha256     bytea NOT NULL,
    reason             text NOT NULL,
    detail             text NOT NULL,
    first_received_at  timestamptz NOT NULL,
    received_at        timestamptz NOT NULL,
    occurrences        bigint NOT NULL DEFAULT 1,
    UNIQUE (topic, payload_sha256)
);
CREATE INDEX dead_letters_received_at ON dead_letters (received_at DESC);

-- Alerts and their history (filled by the rule engine).
CREATE TABLE alerts (
    id                  bigserial PRIMARY KEY,
    fingerprint         text NOT NULL,
    rule                text NOT NULL,
    state               text NOT NULL CHECK (state IN ('pending', 'firing', 'resolved')),
    severity            text NOT NULL,
    labels              jsonb NOT NULL,
    annotations         jsonb NOT NULL DEFAULT '{}'::jsonb,
    device_id           text REFERENCES devices (id) ON DELETE SET NULL,
    active_at           timestamptz NOT NULL,
    started_at          timestamptz,
    resolved_at         timestamptz,
    keep_firing_since   timestamptz,
    acknowledged_at     timestamptz,
    acknowledged_by     text,
    ack_comment         text,
    updated_at          timestamptz NOT NULL DEFAULT now()
);
-- At most one open (pending or firing) instance per label set.
CREATE UNIQUE INDEX alerts_open_fingerprint ON alerts (fingerprint) WHERE state <> 'resolved';
CREATE INDEX alerts_state ON alerts (state, severity);

CREATE TABLE alert_events (
    id        bigserial PRIMARY KEY,
    alert_id  bigint NOT NULL REFERENCES alerts (id) ON DELETE CASCADE,
    time      timestamptz NOT NULL,
    kind      text NOT NULL,          -- pending, firing, resolved, acknowledged, escalated, ...
    actor     text,
    reason    jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX alert_events_alert ON alert_events (alert_id, time);

-- Rollup bookkeeping for the plain-PostgreSQL flavour (unused under TimescaleDB):
-- rollups are exact for buckets that end before least(refreshed_to, dirty_from).
CREATE TABLE rollup_state (
    name          text PRIMARY KEY,
    refreshed_to  timestamptz NOT NULL DEFAULT '-infinity',
    dirty_from    timestamptz
);
INSERT INTO rollup_state (name) VALUES ('readings');
