import sys

from corrsteer.cli.main import main

sys.exit(main())
