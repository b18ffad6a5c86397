"""`python -m mlproject.serve.predlog '<LogConfig as JSON>'`: the writer process."""

import sys

from .writer import main

sys.exit(main())
