"""Image classification: data (CIFAR-10, image folders, a device-resident loader), models, training."""
