"""ARC task: task JSON loading, 30x30 EOS canvas, dihedral+colour augmentation, voting evaluator."""
