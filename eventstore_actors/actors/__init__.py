"""Supervision on top of pykka: supervised actors, a one-for-one supervisor, a ticker."""
