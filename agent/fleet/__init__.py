"""The operator side of fleet telemetry (DESIGN.md section 14): ``agent fleet`` (:mod:`.summary`),
the incident watcher ``agent fleet watch`` (its decisions in :mod:`.incidents`, its MQTT loop in
:mod:`.watcher`) and ``agent fleet send`` (:mod:`.sender`). What the broker delivers is read by
:mod:`.payloads` and :mod:`.topics` and shown through :mod:`.shown`: it is data from thousands of
terminals, never trusted to be well formed."""
