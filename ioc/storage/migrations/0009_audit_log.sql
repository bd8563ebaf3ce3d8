-- Audit log: who changed what through the API (operators and administrators: acknowledge,
-- silence, dispatch, close, CAP issue, …) and token changes. Written by ioc.api.audit (one row
-- per successful mutating request) and ioc.storage.tokens (in the token change's transaction).
-- The detail of each change stays in its own history (alert_events, incident_events); this
-- table answers "what did this person do, and when" in one place.
CREATE TABLE audit_log (
    id          bigserial PRIMARY KEY,
    time        timestamptz NOT NULL DEFAULT now(),
    actor       text NOT NULL,            -- admin, operator/<name>, agency:<code>/<name>, …
    role        text NOT NULL,
    action      text NOT NULL,            -- "POST /api/v1/alerts/{alert_id}/ack", token.created
    target      text,                     -- the path's ids: "alert_id=17"
    status      integer,                  -- the HTTP answer
    request_id  text
);
CREATE INDEX audit_log_time ON audit_log (time DESC);
CREATE INDEX audit_log_actor ON audit_log (actor, time DESC);
