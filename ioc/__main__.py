import sys

from ioc.app.cli import main

sys.exit(main())
