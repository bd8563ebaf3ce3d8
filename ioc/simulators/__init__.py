"""Field-device simulators. They speak only MQTT (contract topics and payloads) and read the site
file, the topic scheme and the metric catalogue; they never import ingest, rules or the API."""
