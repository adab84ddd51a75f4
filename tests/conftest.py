import os

from hypothesis import HealthCheck, settings

# Local runs explore new examples each time; CI (CI=true) runs a fixed, derandomized set so that a
# submission's result does not depend on the draw. HYPOTHESIS_PROFILE=thorough explores 10x more.
_common = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("default", max_examples=30, **_common)
settings.register_profile("ci", max_examples=30, derandomize=True, **_common)
settings.register_profile("thorough", max_examples=300, **_common)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "default"))
