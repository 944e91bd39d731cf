"""Files in and out: checkpoints, configs, PNG metadata, image files, output folders, JSON and the device."""
