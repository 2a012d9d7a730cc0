"""Mosquitto configuration for OneCard, and a runner that starts our own broker.

The configuration files live in ``templates/``; :mod:`broker_config.render` fills them
in for one broker instance and :mod:`broker_config.runner` starts ``mosquitto`` with
them on a free loopback port (tests, the demo, a single-machine install). This package
imports nothing else of ours.
"""
