-- The lending engine reads readings by ARRIVAL, not by device time: a backlog a device sends after
-- an outage (old device times, received now) must reach the engine's series cache even though
-- newer readings of the same device were already read. `received_at` (the gateway's receive
-- time) is the arrival order; this index lets the engine fetch, per device and metric, what
-- arrived after its cursor without scanning the device's history.
--
-- A device whose messages are all refused for what they say (out of range, not finite: dead
-- letters) is talking, not silent: `last_heard` records when such a message arrived, so the
-- inactivity timeout keeps it online, while `last_seen` stays the time of its last stored reading
-- (how fresh its data is).
-- depends: 0006_receivable_review

CREATE INDEX readings_arrival ON readings (device_id, metric, received_at);

ALTER TABLE device_status ADD COLUMN last_heard timestamptz;
