"""The user side: decorators, futures, the HTTP client, sandboxes and configuration."""
