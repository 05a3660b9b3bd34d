"""`python -m airgap` runs the command line."""

from airgap.cli import main

main()
