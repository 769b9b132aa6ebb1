"""A model module that prints while it is imported, at the Python and at the file-descriptor
level (for ``tests/test_faults.py``): none of it may reach the terminal of ``reconcile``."""

import os
import sys

print("fault_models_noisy: printed to stdout while importing")
print("fault_models_noisy: printed to stderr while importing", file=sys.stderr)
os.write(1, b"fault_models_noisy: fd 1 while importing\n")
os.write(2, b"fault_models_noisy: fd 2 while importing\n")

from tests.fault_models import good as make  # noqa: E402,F401 - the same well-behaved model
