"""The transaction layer (DESIGN.md sections 10 and 13): the payment app's socket, wrap mode (the
agent owns the host session), pass-through mode, and the reversal queue.

``app_socket`` reads the app's frames and writes the answers; ``wrap`` turns one app request into
host traffic and back, with recovery after a refusal; ``sender`` makes one try of a request (STAN,
TID/MID, batch, MAC, journal, host, MAC check); ``reversals`` sends what the journal queued;
``passthrough`` forwards whole frames; ``macs`` computes and checks MACs through the card module.
"""
