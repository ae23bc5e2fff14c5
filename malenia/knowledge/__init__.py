"""Attribute knowledge (docs/knowledge.md).

vocabulary.py  the 8 aspects' descriptions (Resources/knowledge/vocabulary.json)
table.py       disease knowledge table: per disease and aspect, probabilities over descriptions
estimate.py    workbook-estimated profiles (smoothed counts) + expert profiles -> table
inference.py   calibrated disease posterior from attribute matches, "unclassified" rule
calibration.py leave-one-out accuracy and temperature / threshold fitting on the workbook
encoder.py     text encoder (all-MiniLM-L6-v2 offline by default, any local HF folder)
bank.py        attribute bank: cached safetensors embeddings of the vocabulary
workbook.py    the authors' workbook -> one record per lesion (reports: malenia.data.importers.annotations)
findings.py    keyword rules: report text -> specific-feature ids
"""
