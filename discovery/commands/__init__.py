"""One module per `lossforge` subcommand; each exposes ``register(app)``."""
