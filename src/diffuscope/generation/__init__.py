"""Generation: prompts -> conditions -> guided denoiser -> sampler -> decoded images, in one path."""
