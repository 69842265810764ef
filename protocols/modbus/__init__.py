"""Modbus driver: config types, the pure register codec, block planning and the polled source."""
