"""Phoenix's RL side: env, Mamba-SAC agent, training, evaluation, research protocol, live trading. No dagster."""
