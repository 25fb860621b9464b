import sys

from integration.deploy.tier import main

sys.exit(main(sys.argv))
