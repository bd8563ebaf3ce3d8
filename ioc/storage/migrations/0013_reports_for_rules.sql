-- Citizen reports posted over Open311 reach the rule engine from this table (docs/rules.md,
-- "Citizen reports reach the rules once"): ingest hands the reports it commits to the alert
-- stages with its batch, an Open311 POST only writes a row. `rules_at` is when the rules
-- service took a posted report (claimed with SKIP LOCKED and marked in one transaction, then
-- evaluated): a restart does not take it again, and no report is skipped whatever order several
-- API processes commit in (a per-row mark, not a largest-id watermark: bigserial ids are not
-- committed in id order). Reports relayed over MQTT (dedupe_key 'mqtt:…') keep NULL: they
-- reach the rules with ingest's batch.
ALTER TABLE reports ADD COLUMN rules_at timestamptz;
-- Reports stored before this column existed are not fed to the rules late.
UPDATE reports SET rules_at = received_at WHERE dedupe_key LIKE 'open311:%';
CREATE INDEX reports_for_rules ON reports (id)
    WHERE rules_at IS NULL AND dedupe_key LIKE 'open311:%';
COMMENT ON COLUMN reports.rules_at IS 'when the rules service took this Open311 report; NULL: not yet (MQTT reports: always NULL, they come with ingest''s batch)';
