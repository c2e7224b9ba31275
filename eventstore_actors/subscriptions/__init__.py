"""Subscriptions: a pure state machine, the actor that drives it, and the handle users hold."""
