"""Using a trained bundle: prediction of image files, Grad-CAM heatmaps, the bundle's report."""
