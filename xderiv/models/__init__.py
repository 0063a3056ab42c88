"""What is differentiated: layers, networks, composites, and the seed notebook's networks."""
