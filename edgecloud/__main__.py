import sys

from edgecloud.cli import main

sys.exit(main())
