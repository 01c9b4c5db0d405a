"""The trained models glsr ships, installed as ``glsr.zoo`` package data (see :mod:`glsr.shipped`)."""
