import sys

from edgecloud_tools.cli import main

sys.exit(main())
