"""``python -m rayweb.cli``."""

from . import main

main()
