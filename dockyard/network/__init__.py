"""Pod networking through the real CNI plugins (and, later, service proxy rules and DNS)."""
