"""One conformance suite for every register transport: SIM over TCP, SIM on serial lines, MQTT."""
