-- Every citizen report reaches the rule engine from this table, once, whatever its channel
-- (MQTT relays committed by ingest, Open311 POSTs committed by any API process) and wherever the
-- rules run (docs/rules.md, "Citizen reports reach the rules once"). `rules_at` is when a rules
-- service took the report: claimed with SKIP LOCKED and marked in one transaction, then
-- evaluated; a restart does not take it again. A per-row mark, not a largest-id watermark:
-- bigserial ids are not committed in id order, and a watermark would skip the smaller one.
ALTER TABLE reports ADD COLUMN rules_at timestamptz;
-- Reports stored before this column existed are not fed to the rules late.
UPDATE reports SET rules_at = received_at;
CREATE INDEX reports_for_rules ON reports (id) WHERE rules_at IS NULL;
COMMENT ON COLUMN reports.rules_at IS 'when a rules service took this report (counted once); NULL: not yet';
