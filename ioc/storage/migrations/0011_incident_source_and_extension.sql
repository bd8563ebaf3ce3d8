-- KPIs by origin and the one formal extension per case (docs/kpis.md).
--
-- source: what opened the incident — a citizen's report ('report': MQTT channels and Open311),
-- a firing alert ('alert'), or an operator by hand ('operator'). The programme's headline rates
-- are over 'report' incidents; the others are reported beside them.
ALTER TABLE incidents ADD COLUMN source text NOT NULL DEFAULT 'operator'
    CHECK (source IN ('report', 'alert', 'operator'));
UPDATE incidents i SET source = 'alert' WHERE i.source_alert_id IS NOT NULL;
-- an incident opened by the router for a report records "report #…" as its opening note; one
-- opened from an alert whose alert row is gone has "alert #…"
UPDATE incidents i SET source = 'report'
 WHERE i.source_alert_id IS NULL
   AND EXISTS (SELECT 1 FROM incident_events e WHERE e.incident_id = i.id AND e.kind = 'opened'
                  AND e.note LIKE 'report #%');
UPDATE incidents i SET source = 'alert'
 WHERE i.source = 'operator'
   AND EXISTS (SELECT 1 FROM incident_events e WHERE e.incident_id = i.id AND e.kind = 'opened'
                  AND e.note LIKE 'alert #%');
-- the default stays for rows written outside ioc/incidents/store.py (which always says): such a
-- row was made by a person, not by the report router or an alert
CREATE INDEX incidents_source ON incidents (source, opened_at);

-- The IOC's forwarding clock runs from receipt to the FIRST dispatch; dispatched_at is moved by
-- every later dispatch (after a rejection, a reopening, a reassignment).
ALTER TABLE incidents ADD COLUMN first_dispatched_at timestamptz;
UPDATE incidents i SET first_dispatched_at = coalesce(
    (SELECT min(e.time) FROM incident_events e
      WHERE e.incident_id = i.id AND e.kind = 'dispatch'),
    i.dispatched_at);

-- One formal extension per case: when, why, and the deadline it replaced.
ALTER TABLE incidents ADD COLUMN extended_at timestamptz;
ALTER TABLE incidents ADD COLUMN extension_reason text;
ALTER TABLE incidents ADD COLUMN deadline_before_extension timestamptz;
