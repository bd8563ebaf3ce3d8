-- Device lifecycle (docs/devices.md): a decommissioned device keeps its row, its readings and
-- events (foreign keys and analysts' queries still find them); ingest dead-letters its new
-- messages (reason `decommissioned`) and `ioc devices provision` drops its MQTT account.
-- Decommissioning is one way: the site file's start-up sync does not bring a device back.
ALTER TABLE devices
    ADD COLUMN decommissioned_at     timestamptz,
    ADD COLUMN decommission_reason   text;

-- `source` gains 'import' (ioc devices import, POST /api/v1/devices/import) beside 'site' and
-- 'api'; it says where the row was created, not who changed it last (that is the audit log).
COMMENT ON COLUMN devices.source IS 'site (site file), api (POST /api/v1/devices) or import';
COMMENT ON COLUMN devices.decommissioned_at IS 'when the device was taken out of service; NULL while in service';
