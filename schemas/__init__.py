"""JSON Schemas of the roistore format (read with importlib.resources)."""
