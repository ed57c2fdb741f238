"""Fleet telemetry (DESIGN.md section 14): what the fleet hears of the journal's events
(:mod:`.events`), the terminal's state as the fleet sees it (:mod:`.state`), the MQTT publisher
with its store-and-forward outbox (:mod:`.publisher`), the Prometheus textfile
(:mod:`.textfile`) and the fleet's summary for ``agent fleet`` (:mod:`.fleet`)."""
