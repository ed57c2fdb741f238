"""The service (DESIGN.md section 13): ``assembly`` is the composition root (the Agent, built from
one configuration), ``daemon`` runs it under systemd (signals, sd_notify, supervised loops), and
``control`` is the technician's control socket."""
