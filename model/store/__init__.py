"""How trained weights are stored: training checkpoints and the model folder users share."""
