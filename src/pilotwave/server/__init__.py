"""The pilotwave server: REST API over the durable job queue (FastAPI)."""
