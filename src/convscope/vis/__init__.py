"""See inside CNNs: engines for activations, textures, inversion and more (pure, callback progress)."""
