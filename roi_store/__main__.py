"""``python -m roi_store`` runs the command line."""

from roi_store.cli.main import main

main()
