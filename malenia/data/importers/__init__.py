"""Importers for public dataset layouts (MSD, KiTS23)."""
