"""The host session beyond sign-in (DESIGN.md section 16): the download chains the host asks for
in its header or the payment app runs, their data kept in the state directory, and what the
header's processing requirement makes the agent do."""
