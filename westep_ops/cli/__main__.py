"""``python -m westep_ops.cli``: the same as the ``westep-ops`` console script."""

from westep_ops.cli import main

if __name__ == "__main__":
    main()
