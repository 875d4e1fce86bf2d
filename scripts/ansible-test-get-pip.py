"""Stand-in for the get-pip.py that ansible-test downloads from ci-files.testing.ansible.com
(not reachable from here) to bootstrap pip in its sanity test venvs: pip from Python's own
ensurepip, then the packages asked for from the package index pip is configured with.

scripts/ansible-test puts it where ansible-test caches the real one.
"""

import ensurepip
import os
import subprocess
import sys

ensurepip.bootstrap(upgrade=True)
args = [arg for arg in sys.argv[1:] if arg not in ("--no-setuptools", "--no-wheel")]
bundle = "/etc/ssl/certs/ca-certificates.crt"  # the system's CAs (ansible-test drops PIP_CERT)
cert = ["--cert", bundle] if os.path.exists(bundle) else []
subprocess.check_call([sys.executable, "-m", "pip", "install", *cert, *args])
