-- Citizen reports, incidents, agency dispatch (incidents issue). Routing and deadlines are data
-- (ioc/site_data/routing.yaml); these tables hold what happened.

-- API tokens beyond the bootstrap admin token: operators, viewers, agencies (agency:{code}),
-- Open311 client applications (open311). Only the SHA-256 of a token is stored.
CREATE TABLE api_tokens (
    id          bigserial PRIMARY KEY,
    token_hash  bytea NOT NULL UNIQUE,
    role        text NOT NULL,          -- admin | operator | viewer | agency:{code} | open311
    name        text NOT NULL,          -- who holds it (person, agency system, citizen app)
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);

-- One incident per real-world problem. Opened from a firing alert or a citizen report; reports
-- near an open incident of the same category join it. status follows the lifecycle in
-- ioc/incidents/lifecycle.py; every change is an incident_events row.
CREATE TABLE incidents (
    id              bigserial PRIMARY KEY,
    category        text NOT NULL,          -- Open311 service_code (routing.yaml categories)
    severity        text NOT NULL CHECK (severity IN ('info', 'warning', 'critical')),
    status          text NOT NULL CHECK (status IN ('new', 'dispatched', 'accepted', 'in_progress',
                                                    'resolved', 'closed', 'rejected')),
    title           text NOT NULL,
    description     text NOT NULL DEFAULT '',
    city            text,
    ward            text,
    lat             double precision,
    lon             double precision,
    agency_id       text,                   -- responsible agency (from routing, or set by hand)
    opened_at       timestamptz NOT NULL,
    deadline_at     timestamptz,            -- moves later while the clock is paused
    paused_since    timestamptz,            -- set while the clock is paused
    dispatched_at   timestamptz,
    accepted_at     timestamptz,
    resolved_at     timestamptz,
    closed_at       timestamptz,
    overdue_at      timestamptz,            -- when it was first seen past its deadline
    rating          smallint CHECK (rating BETWEEN 1 AND 5),
    rating_comment  text,
    merged_into     bigint REFERENCES incidents (id),
    source_alert_id bigint REFERENCES alerts (id) ON DELETE SET NULL,
    version         integer NOT NULL DEFAULT 1,   -- optimistic concurrency for operators
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX incidents_open ON incidents (category, opened_at DESC)
    WHERE status NOT IN ('resolved', 'closed') AND merged_into IS NULL;
CREATE INDEX incidents_agency ON incidents (agency_id, status);
CREATE INDEX incidents_deadline ON incidents (deadline_at)
    WHERE status NOT IN ('resolved', 'closed') AND merged_into IS NULL;
-- One open incident per firing alert (an alert that re-fires after resolving opens a new one).
CREATE UNIQUE INDEX incidents_source_alert ON incidents (source_alert_id)
    WHERE source_alert_id IS NOT NULL;

CREATE TABLE incident_events (
    id           bigserial PRIMARY KEY,
    incident_id  bigint NOT NULL REFERENCES incidents (id) ON DELETE CASCADE,
    time         timestamptz NOT NULL DEFAULT now(),
    kind         text NOT NULL,      -- opened, dispatched, accepted, progress, resolved, closed,
                                     -- rejected, reopened, rated, report_joined, merged, split,
                                     -- overdue, reassigned, alert_linked
    actor        text NOT NULL,      -- 'system', 'admin', 'agency:urban-works', token name, ...
    from_status  text,
    to_status    text,
    note         text,
    data         jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX incident_events_incident ON incident_events (incident_id, time);

-- Alerts linked to an incident beyond the one that opened it (same problem seen twice).
CREATE TABLE incident_alerts (
    alert_id     bigint PRIMARY KEY REFERENCES alerts (id) ON DELETE CASCADE,
    incident_id  bigint NOT NULL REFERENCES incidents (id) ON DELETE CASCADE,
    linked_at    timestamptz NOT NULL DEFAULT now()
);

-- Citizen reports (phản ánh hiện trường), from MQTT hg/{city}/reports/{channel} or Open311 POST.
-- dedupe_key makes the same report sent twice one row: 'mqtt:{city}:{channel}:{id}' for MQTT,
-- 'open311:{sha256 of the request}' for Open311 (see ioc/reports).
CREATE TABLE reports (
    id              bigserial PRIMARY KEY,       -- Open311 service_request_id
    dedupe_key      text NOT NULL UNIQUE,
    token           text NOT NULL UNIQUE,        -- Open311 token returned before an id exists
    source          text NOT NULL,               -- open311 | app | hotline | zalo | ...
    external_id     text,                        -- the channel's own id (app-000123)
    service_code    text NOT NULL,
    city            text,
    ward            text,
    lat             double precision,
    lon             double precision,
    address         text,
    description     text NOT NULL CHECK (length(description) <= 4000),
    media_url       text,
    reporter        jsonb NOT NULL DEFAULT '{}'::jsonb,  -- Open311 email/first/last/phone (personal data)
    client          text,                        -- api_tokens.name of the Open311 client
    reported_at     timestamptz NOT NULL,
    received_at     timestamptz NOT NULL DEFAULT now(),
    incident_id     bigint REFERENCES incidents (id),
    routed_at       timestamptz,                 -- NULL until the incident router took it
    rating          smallint CHECK (rating BETWEEN 1 AND 5),
    rating_comment  text,
    rated_at        timestamptz
);
CREATE INDEX reports_unrouted ON reports (id) WHERE routed_at IS NULL;
CREATE INDEX reports_incident ON reports (incident_id);
CREATE INDEX reports_reported_at ON reports (reported_at DESC);

-- Transactional outbox: written in the same transaction as the incident change it announces,
-- delivered by the dispatch worker (ioc/dispatch) to each agency channel at least once; the
-- idempotency key lets the receiver drop repeats, so it sees each dispatch exactly once.
CREATE TABLE outbox (
    id               bigserial PRIMARY KEY,
    idempotency_key  text NOT NULL UNIQUE,
    incident_id      bigint REFERENCES incidents (id) ON DELETE SET NULL,
    agency_id        text NOT NULL,
    channel          text NOT NULL CHECK (channel IN ('webhook', 'mqtt')),
    target           text NOT NULL,              -- webhook URL or MQTT topic
    kind             text NOT NULL,              -- incident.dispatched, incident.updated, ...
    payload          jsonb NOT NULL,
    state            text NOT NULL DEFAULT 'pending'
                         CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    created_at       timestamptz NOT NULL DEFAULT now(),
    delivered_at     timestamptz,
    last_error       text
);
CREATE INDEX outbox_due ON outbox (next_attempt_at) WHERE state = 'pending';
CREATE INDEX outbox_failed ON outbox (created_at) WHERE state = 'failed';

CREATE TABLE delivery_attempts (
    id           bigserial PRIMARY KEY,
    outbox_id    bigint NOT NULL REFERENCES outbox (id) ON DELETE CASCADE,
    time         timestamptz NOT NULL DEFAULT now(),
    duration_ms  double precision NOT NULL,
    outcome      text NOT NULL,     -- delivered, retry, failed
    status_code  integer,
    error        text
);
CREATE INDEX delivery_attempts_outbox ON delivery_attempts (outbox_id, time);

-- Public warnings issued as OASIS CAP 1.2 messages (Alert, Update, Cancel referencing earlier).
CREATE TABLE cap_messages (
    id           bigserial PRIMARY KEY,
    identifier   text NOT NULL UNIQUE,
    msg_type     text NOT NULL CHECK (msg_type IN ('Alert', 'Update', 'Cancel')),
    sent_at      timestamptz NOT NULL,
    alert_id     bigint REFERENCES alerts (id) ON DELETE SET NULL,
    incident_id  bigint REFERENCES incidents (id) ON DELETE SET NULL,
    references_id bigint REFERENCES cap_messages (id),
    created_by   text NOT NULL,
    xml          text NOT NULL
);
CREATE INDEX cap_messages_alert ON cap_messages (alert_id);
