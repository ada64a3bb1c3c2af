"""``python -m pledgewatch``. The CLI is imported only when run as the program: a writer process
spawned by the gateway re-imports this module as ``__mp_main__`` and needs none of it."""

if __name__ == "__main__":
    from pledgewatch.cli.main import main

    main()
