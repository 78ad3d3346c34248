"""The production rehearsal: a whole run on the production topology (PostgreSQL, Redis or
RabbitMQ, the learner and workers started by the scripts in scripts/), checked end to end."""
