-- Disaster risk level (QĐ 18/2021/QĐ-TTg, 1-5) of flood, rain and salinity alerts, from the
-- rule's `risk:` (docs/rules.md "Risk levels"). NULL: the rule carries none (lighting, traffic,
-- devices). While an alert is open its level only rises (the store takes the greater).
ALTER TABLE alerts ADD COLUMN risk_level smallint CHECK (risk_level BETWEEN 1 AND 5);
