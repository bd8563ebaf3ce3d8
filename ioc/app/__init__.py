"""The roof: the composition root (``runtime``: process roles, wiring, run) and the ``ioc`` command
(``cli``, ``rules_cli``). Nothing imports this package but ``ioc.__main__`` and tests."""
