"""Alerts out: a transactional outbox drained to signed webhooks and an MQTT alert topic.

A trigger writes every alert change to an outbox in the same transaction as the change; the
ledger's sequencer writes each signed tree head to the same outbox (:mod:`notifier.ledger_heads`,
through its ``on_head`` hook); the notifier (:mod:`notifier.worker`) drains it. The modules, from
pure to I/O:

- :mod:`notifier.signing`: the webhook signature (``sign``/``verify``) and header names; stdlib
  only, so a receiver can copy it.
- :mod:`notifier.events`: event names, bodies, MQTT topics, webhook URL checks, retry backoff;
  stdlib only.
- :mod:`notifier.config`: :class:`~notifier.config.NotifierConfig`.
- :mod:`notifier.webhook_store`: the SQL the API uses to manage webhooks and read their log.
- :mod:`notifier.webhooks`: the dispatcher that claims, POSTs (httpx) and records deliveries.
- :mod:`notifier.ledger_heads`: queues a signed head (the sequencer's hook) for the webhooks
  that asked for heads and for the retained heads topic.
- :mod:`notifier.alert_publisher`: the MQTT publisher (paho) of the alert and heads topics.
- :mod:`notifier.worker`: the loop that drives both.
"""
