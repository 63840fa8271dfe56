"""`python -m trmlm` runs the `trm` command line (the one module of trmlm that reaches into trmlm.cli)."""

from trmlm.cli.main import main

if __name__ == "__main__":
    main()
