"""python -m ebgand_trainer: see cli.py and README.md."""
import sys

from .cli import main

sys.exit(main())
