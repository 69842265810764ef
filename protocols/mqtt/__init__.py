"""MQTT driver (paho-mqtt): device topics in the telemetry schema, QoS 1, persistent sessions, TLS."""
