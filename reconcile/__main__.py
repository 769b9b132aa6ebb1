import sys

try:
    from reconcile.cli import main
except KeyboardInterrupt:  # Ctrl-C while reconcile is imported: one line, as it is later (cli._run)
    print("reconcile: error: interrupted", file=sys.stderr)
    sys.exit(130)

sys.exit(main())
