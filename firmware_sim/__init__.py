"""Device simulators for PledgeWatch: a fleet of warehouses, production lines and vehicles.

Each simulated device publishes real MQTT telemetry (payload contract v1) at QoS 1 through its
own outbox, so a broker outage or restart loses nothing: unacknowledged messages are resent
unchanged after a reconnect, and the server dedupes on (device id, boot, seq).

- :mod:`firmware_sim.device_models` - pure device models and the deterministic fleet builder
- :mod:`firmware_sim.scenarios` - scenarios that modify readings (normal trading, theft, leak,
  tamper, swap, geofence, coldchain, release)
- :mod:`firmware_sim.market` - seeded commodity price series (steady, price-crash) as simulator ticks
- :mod:`firmware_sim.messages` - the v1 payload encoder (boot counter + sequence number)
- :mod:`firmware_sim.outbox` - per-device store of messages awaiting a PUBACK
- :mod:`firmware_sim.boot` - the persisted per-device boot counter
- :mod:`firmware_sim.fleet` - ``run_fleet``: one aiomqtt client per device, one event loop
"""
