"""Broker configuration shipped with the project, and a runner for Debian's mosquitto."""
