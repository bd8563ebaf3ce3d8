"""The rule engine (rules issue): a pure engine that takes readings, events and ``now`` and
returns alert transitions. It imports no database, broker or web code, so live evaluation, tests
and backtests share it. The package exists now so the layout and import boundaries are fixed;
its contents arrive with the rules issue."""
