"""transport: alert payloads -> MQTT, end to end until the hub's receipt.

Takes alert payloads (JSON with message_id / alert_id / priority) from the alert
stage; gives durable, ordered, at-least-once publication to the broker that ends
only when the hub confirms the message is stored (see docs/mqtt.md). Modules:
``settings`` ([mqtt] config), ``topics`` (topic layout), ``messages`` (wire
schemas: receipts, status, heartbeat, commands), ``outbox`` (SQLite WAL outbox),
``ioloop`` (one paho client driven by one thread), ``client`` (``MqttTransport``,
what the daemon uses), ``commands`` (route hub commands to the alert engine),
``embedded`` (amqtt demo broker), ``mosquitto`` (run a local mosquitto for
tests, tools and demos). Importing this package imports nothing heavy.
"""
