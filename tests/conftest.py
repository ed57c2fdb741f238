import os

from hypothesis import HealthCheck, settings

# Shared machines are noisy: no per-example deadline. POS_AGENT_FUZZ=long runs the fuzz targets
# much longer than the normal suite does.
settings.register_profile("default", deadline=None)
settings.register_profile(
    "long", deadline=None, max_examples=5_000, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("long" if os.environ.get("POS_AGENT_FUZZ") == "long" else "default")
