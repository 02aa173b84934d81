"""The catalogue guard: MoEngage's account-wide caps on distinct custom user attributes, events
and attributes per event, held across a consumer group through a claims log in Kafka.

``settings`` (the configuration model), ``rule`` (pure: which names a record brings and whether
a claim fits, decided in log order), ``claims`` (the single-partition claims topic) and ``guard``
(what the run loop calls). Importing this package imports nothing heavy: ``config`` imports
``settings`` from here.
"""
