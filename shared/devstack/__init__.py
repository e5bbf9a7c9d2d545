"""The embedded development stack: PostgreSQL, a Kafka-protocol broker and Chroma as local processes."""
