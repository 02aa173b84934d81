"""MoEngage Kafka connector: Avro topics in, MoEngage Bulk Import requests out, at least once."""

__version__ = "0.1.0"
