"""The data byte-lcm trains and evaluates on, one module per job (the map: README.md, *The layout*)."""
