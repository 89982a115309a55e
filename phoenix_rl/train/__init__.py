"""Training: the SAC + Mamba loop, its Pipes and SageMaker entry points, and the local process pool."""
