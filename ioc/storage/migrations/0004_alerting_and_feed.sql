-- Alerting (rules issue): suppression and escalation state on alerts, silences, recurring
-- maintenance windows, and the durable live feed every API process serves /ws from.

ALTER TABLE alerts
    ADD COLUMN value            double precision,  -- the value the condition saw last
    ADD COLUMN suppressed_by    jsonb,             -- {"silence": id} | {"inhibited_by": alert id} | {"maintenance": id}
    ADD COLUMN escalated_at     timestamptz,
    ADD COLUMN escalation_level integer NOT NULL DEFAULT 0,
    ADD COLUMN resolved_by      text,              -- operator who resolved it by hand
    ADD COLUMN resolve_reason   text;
CREATE INDEX alerts_rule ON alerts (rule, state);
CREATE INDEX alerts_active_at ON alerts (active_at DESC);

-- Alertmanager silences: an alert whose labels match every matcher is muted between starts_at
-- and ends_at (it still fires and is stored; the wall screen and dispatch ignore it).
CREATE TABLE silences (
    id          bigserial PRIMARY KEY,
    matchers    jsonb NOT NULL,        -- [{"name": "ward", "op": "=", "value": "phuong-5"}, ...]
    starts_at   timestamptz NOT NULL,
    ends_at     timestamptz NOT NULL CHECK (ends_at > starts_at),
    created_by  text NOT NULL,
    comment     text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expired_at  timestamptz            -- set when expired early by hand
);

-- Recurring maintenance windows: a silence that comes back on given weekdays at a local time
-- (Asia/Ho_Chi_Minh), e.g. the lighting contractor's Tuesday 08:00-11:00 round.
CREATE TABLE maintenance_windows (
    id          bigserial PRIMARY KEY,
    name        text NOT NULL,
    matchers    jsonb NOT NULL,
    weekdays    integer[] NOT NULL,    -- ISO weekdays, 1 = Monday
    start_time  time NOT NULL,         -- local time of day
    duration    interval NOT NULL CHECK (duration > interval '0'),
    valid_from  timestamptz,
    valid_to    timestamptz,
    created_by  text NOT NULL,
    comment     text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- The live feed: every change pushed to wall screens, with the seq clients resume from.
-- Writers take a transaction-level advisory lock before inserting (ioc.storage.feed.append), so
-- rows commit in seq order and a reader that has seen seq N has seen everything below N.
CREATE TABLE feed_events (
    seq      bigserial PRIMARY KEY,
    time     timestamptz NOT NULL DEFAULT now(),
    type     text NOT NULL,            -- alert, device, readings, incident, kpi
    city     text,
    ward     text,
    kind     text,
    payload  jsonb NOT NULL
);
CREATE INDEX feed_events_time ON feed_events (time);
