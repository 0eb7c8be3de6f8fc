"""The database layer: typed models, engines and sessions, migrations and repository functions."""
