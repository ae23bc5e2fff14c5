"""CT I/O, preprocessing, lesion synthesis, the dataset format and public-dataset importers."""
