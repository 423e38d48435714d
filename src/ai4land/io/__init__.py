"""Reading and writing files: the analysis-ready cube, rasters, products."""
