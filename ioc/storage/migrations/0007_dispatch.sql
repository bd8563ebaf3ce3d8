-- Dispatch delivery (ioc/dispatch): order within a stream, the operators' filters, and who asked
-- for a retry.

-- A delivery waits while an earlier one of its stream (same incident, agency and channel) is not
-- delivered yet, so an update never overtakes its dispatch; the worker checks that on every
-- claim. The same index serves GET /api/v1/deliveries?incident= and the incidents foreign key
-- (ON DELETE SET NULL would otherwise scan the whole outbox).
CREATE INDEX outbox_stream ON outbox (incident_id, agency_id, channel, id);
-- GET /api/v1/deliveries?agency=, newest first.
CREATE INDEX outbox_agency ON outbox (agency_id, id);

-- The last operator retry of a failed delivery (POST /api/v1/deliveries/{id}/retry).
ALTER TABLE outbox
    ADD COLUMN retried_at timestamptz,
    ADD COLUMN retried_by text;
