"""A synthetic MBP-10 market with a planted order-flow edge, written as real DBN files."""
