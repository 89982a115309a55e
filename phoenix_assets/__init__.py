"""Phoenix's data platform: the Dagster definitions (defs/), their pure computation (lib/), the command lines
(cli/)."""
