-- Every writer transaction that stores readings bumps dirty_seq along with dirty_from. Under
-- TimescaleDB, upkeep refreshes the continuous aggregates from dirty_from outside a transaction
-- (CALL refresh_continuous_aggregate cannot run inside one), so it cannot hold the row lock the
-- plain flavour relies on: it clears dirty_from only if dirty_seq did not move meanwhile.
ALTER TABLE rollup_state ADD COLUMN dirty_seq bigint NOT NULL DEFAULT 0;
