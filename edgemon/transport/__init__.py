"""transport: Alert -> MQTT (outbox, topics, commands, status)."""
