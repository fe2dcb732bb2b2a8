"""The engine: expression evaluation, operators, scans, the exchange and the stage runner."""
