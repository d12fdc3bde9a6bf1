"""Developer-network helpers: local genesis, test users, fault-injection harnesses."""
