"""``python -m motlab`` is the ``motlab`` command."""

from motlab.cli import main

if __name__ == "__main__":
    main()
