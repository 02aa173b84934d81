"""An example transform package, copied next to the configuration in the image."""
