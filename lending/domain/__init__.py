"""The pure lending domain: no psycopg, MQTT or FastAPI imports; values in, values and events out."""
