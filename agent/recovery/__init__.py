"""97 recovery (DESIGN.md section 7): turn a host's refusal into an approved retry, or into a
precise message for a person.

On a host answer whose code says the terminal itself is the problem (97 not registered, 03 invalid
merchant, 58 not permitted, C1; 77 batch or session; A0/99/A7 key trouble), the agent journals it,
runs the fast self-check, picks remedies from the decision table below, and retries the original
request with a new STAN, a fresh MAC and the TID/MID it has now, a bounded number of times within
a deadline. A refusal is a definite decline, so a retry cannot charge twice; a timeout is never
retried (it is a reversal). Still refused: the terminal is ``unregistered``. Financial requests are
then answered at once without host traffic, a background probe signs in with back-off, and the
hooks get a bilingual message with the TID, MID and support number.

What a header asks for alongside an answer that is not a refusal (sign in again, downloads,
re-provisioning) is :mod:`agent.session`'s business.

``policy`` is the pure decision table, ``engine`` runs a recovery and the unregistered state,
``remedies`` says what the terminal lets recovery do (the service implements it).
"""
