"""`python -m onprem_ray_cli`: the same as the `onprem-ray` command."""

import sys

from onprem_ray_cli.main import main

sys.exit(main())
