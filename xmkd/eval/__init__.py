"""Downstream evaluation of pretrained encoders: the linear-SVM protocol and fine-tuning helpers."""
