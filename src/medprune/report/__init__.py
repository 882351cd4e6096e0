"""Reports over sweep results: Table 1, lossless rates, Fig. 2-style curves, heatmaps and one HTML page."""
