"""The deployment tier: PostgreSQL, Redis, Celery workers and two triggerers with the provider (``make deploy-up``)."""
