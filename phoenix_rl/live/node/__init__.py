"""Live trading on NautilusTrader's `TradingNode` (issue 28): Phoenix's decision loop as a Nautilus strategy,
orders through a configured exec client (the Sandbox venue by default, Interactive Brokers behind `ib.py`)."""
