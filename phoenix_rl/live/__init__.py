"""Paper and live trading: trader, risk engine, order journal, daily report, monitor state, Nautilus venue."""
