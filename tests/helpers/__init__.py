"""Builders of small test data and models that several test modules share."""
