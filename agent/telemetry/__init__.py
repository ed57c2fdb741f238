"""Fleet telemetry, the terminal's side (DESIGN.md section 14): what the fleet hears of the
journal's events (:mod:`.events`), the terminal's state as the fleet sees it (:mod:`.state`), the
MQTT publisher with its store-and-forward outbox (:mod:`.publisher`) and the Prometheus textfile
(:mod:`.textfile`). The operator's side (``agent fleet``) is :mod:`agent.fleet`."""
