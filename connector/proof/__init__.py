"""Proof of ingestion. A 200 from the Bulk Import API means "accepted for processing", not
"ingested": the delivery path keeps a bounded record of the customers it delivered
(:mod:`~connector.proof.delivered`), and ``moengage-connector verify``
(:mod:`~connector.proof.verify`) looks a sample of them up with the Get User API
(:mod:`~connector.proof.export`)."""
