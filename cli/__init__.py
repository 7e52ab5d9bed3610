"""roistore's command line: thin click commands over the ``roi_store`` library."""
