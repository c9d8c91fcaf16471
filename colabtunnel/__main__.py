"""`colabtunnel` and `python -m colabtunnel`: an early keeper for `up` (keeper_launch), then the CLI."""

import sys

from colabtunnel import keeper_launch


def main() -> None:
    keeper_launch.start_early(sys.argv[1:])
    try:
        from colabtunnel.cli import main as cli_main

        cli_main()
    finally:
        keeper_launch.discard_early()


if __name__ == "__main__":
    main()
