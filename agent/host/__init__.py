"""The link to the acquirer host (DESIGN.md section 13): ``channel`` frames one connection, ``mux``
matches responses to requests, ``link`` keeps a connection to one of the endpoints, and ``signin``
gets the working keys over it; ``clock`` keeps the host's time as its answers tell it."""
