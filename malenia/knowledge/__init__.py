"""Attribute aspects vocabulary, disease knowledge table, text encoder, attribute bank, disease inference."""
