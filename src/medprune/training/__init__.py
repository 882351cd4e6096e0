"""Training: the config of a training run (``training.config``) and the loop of the paper's recipe
(``training.loop``)."""
