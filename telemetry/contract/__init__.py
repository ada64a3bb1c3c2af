"""The MQTT contract v1, as pure code: topic scheme (``topics``), metric catalogue (``catalogue``)
and payload decoding with its dead-letter reasons (``payload``). The gateway, the store and the
device simulator all import it; it imports no I/O library."""
