"""Hyperparameter studies for few-shot (ProtoNet) and self-supervised image learning on Ray, tracked in MLflow."""
