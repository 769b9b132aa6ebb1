"""A model module whose import prints and then hangs (for ``tests/test_faults.py``): reconcile
must stop it by its timeout and keep what it prints off the terminal."""

import time

print("slow_import: printed while importing, before hanging")
time.sleep(600)

from tests.fault_models import good as make  # noqa: E402,F401 - never reached
