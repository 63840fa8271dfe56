"""Maze task: "# SGo" grids, Searchformer-style generator, CSV loader, dihedral augmentation."""
