"""The database schema: migrations, the schema snapshot, the ERD and the envelope compiler."""
