"""The floor: the vocabulary every other package shares and nothing else.

Settings, the device catalogue, topics, the device record, the site file, names and wording, time
(durations, the working calendar, the predicted tide, risk levels), logs, backoff and the worker
lifecycle. It imports no other ``ioc`` package (checked by tests/test_layers.py).
"""
