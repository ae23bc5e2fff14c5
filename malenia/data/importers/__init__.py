"""Importers into the dataset format: MSD, KiTS23, LIDC-IDRI nodules, and the authors' annotation workbook."""
